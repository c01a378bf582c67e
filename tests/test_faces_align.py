"""FFHQ alignment and paste-back (lightning_dr2.faces.align / paste): geometry exact, background untouched."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from lightning_dr2.datasets.synthetic import render_face_with_landmarks
from lightning_dr2.faces import FFHQ_TEMPLATE_512, ffhq_template, paste_faces, similarity_to_template, warp_face
from lightning_dr2.faces.align import align_face, matrix_scale, transform_points
from lightning_dr2.faces.paste import crop_mask, crop_to_output


def test_template_landmarks_give_the_identity():
    for size in (512, 256):
        matrix = similarity_to_template(ffhq_template(size), size)
        np.testing.assert_allclose(matrix, [[1, 0, 0], [0, 1, 0]], atol=1e-6)
    np.testing.assert_allclose(ffhq_template(256), FFHQ_TEMPLATE_512 / 2)


@pytest.mark.parametrize("angle, scale", [(0.0, 0.5), (37.0, 1.8), (-80.0, 0.12), (180.0, 1.0)])
def test_similarity_inverts_a_rotated_scaled_shifted_face(angle, scale):
    template = ffhq_template(512)
    rotation = cv2.getRotationMatrix2D((256.0, 256.0), angle, scale)
    rotation[:, 2] += (311.0, -47.0)
    landmarks = transform_points(rotation, template)
    matrix = similarity_to_template(landmarks, 512)
    np.testing.assert_allclose(transform_points(matrix, landmarks), template, atol=1e-3)
    assert matrix_scale(matrix) == pytest.approx(1 / scale, rel=1e-6)


def test_bad_landmarks_are_refused_with_the_shape_named():
    with pytest.raises(ValueError, match=r"5 finite .* shape \(4, 2\)"):
        similarity_to_template(np.zeros((4, 2)), 512)
    with pytest.raises(ValueError, match="5 finite"):
        similarity_to_template(np.full((5, 2), np.nan), 512)
    with pytest.raises(ValueError, match="at least 16"):
        ffhq_template(8)


def test_warped_face_puts_its_true_landmarks_on_the_template():
    face, landmarks = render_face_with_landmarks(3, 256)
    rotation = cv2.getRotationMatrix2D((128.0, 128.0), 25.0, 1.6)
    rotation[:, 2] += (200.0, 150.0)
    photo = cv2.warpAffine(face, rotation, (720, 560), flags=cv2.INTER_LINEAR)
    crop, matrix = align_face(photo, transform_points(rotation, landmarks), 256)
    assert crop.shape == (256, 256, 3) and crop.dtype == np.uint8
    # the crop is the original face up to the synthetic face's own offset from the template
    expected = cv2.warpAffine(face, similarity_to_template(landmarks, 256), (256, 256))
    inner = (slice(40, 216), slice(40, 216))
    assert np.abs(crop[inner].astype(int) - expected[inner]).mean() < 4.0


def test_big_faces_are_smoothed_before_they_are_shrunk():
    """Alternating 1 px stripes shrunk 4x: bilinear sampling alone keeps full-contrast moire, the
    anti-aliased warp averages them to grey."""
    stripes = np.zeros((2048, 2048, 3), np.uint8)
    stripes[:, ::2] = 255
    matrix = np.array([[0.25, 0, 0], [0, 0.25, 0]])
    crop = warp_face(stripes, matrix, 256)
    assert crop[8:-8, 8:-8].std() < 10 and abs(crop[8:-8, 8:-8].mean() - 127.5) < 10


def test_crop_mask_is_zero_at_the_border_one_inside_and_monotone():
    mask = crop_mask(128, erode=0.05, feather=0.1)
    assert mask.dtype == np.float32 and mask.shape == (128, 128)
    assert (mask[:6] == 0).all() and (mask[:, -6:] == 0).all()  # 0.05 * 128 = 6.4 px eroded
    assert (mask[20:108, 20:108] == 1).all()  # fully inside after 6.4 + 12.8 px
    assert (np.diff(mask[64, :64]) >= 0).all()
    with pytest.raises(ValueError, match="erode"):
        crop_mask(64, erode=0.3, feather=0.3)


def test_crop_to_output_is_pixel_centre_exact():
    matrix = similarity_to_template(transform_points(cv2.getRotationMatrix2D((0, 0), 10, 0.7), ffhq_template(256)), 256)
    to_out = crop_to_output(matrix, 256, 512, 2)
    # restored-crop pixel centre c (at 512) -> crop (256) -> photo -> 2x output; compare with doing it by hand
    c = np.array([[100.0, 300.0]])
    crop_px = (c + 0.5) * 0.5 - 0.5
    photo_px = transform_points(cv2.invertAffineTransform(matrix), crop_px)
    np.testing.assert_allclose(transform_points(to_out, c), (photo_px + 0.5) * 2 - 0.5, atol=1e-9)


def _photo_with_face(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    photo = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
    face, landmarks = render_face_with_landmarks(8, 128)
    rotation = cv2.getRotationMatrix2D((64.0, 64.0), -20.0, 1.1)
    rotation[:, 2] += (150.0, 90.0)
    alpha = cv2.warpAffine(np.ones((128, 128), np.float32), rotation, (400, 300))[..., None]
    photo = (photo * (1 - alpha) + cv2.warpAffine(face, rotation, (400, 300)) * alpha).astype(np.uint8)
    return photo, transform_points(rotation, landmarks)


def test_paste_changes_nothing_outside_the_mask_and_the_restored_face_inside():
    photo, landmarks = _photo_with_face(np.random.default_rng(0))
    crop, matrix = align_face(photo, landmarks, 128)
    restored = np.full((256, 256, 3), (250, 10, 10), np.uint8)  # a 2x restorer painting the face red
    out = paste_faces(photo, [restored], [matrix], 128, erode=0.02, feather=0.06)
    assert out.shape == photo.shape and out.dtype == np.uint8
    mask = cv2.warpAffine(crop_mask(256, 0.02, 0.06), crop_to_output(matrix, 128, 256, 1), (400, 300))
    assert (mask > 0).sum() > 2000
    np.testing.assert_array_equal(out[mask == 0], photo[mask == 0])  # bytes kept exactly
    assert (out[mask > 0.999] == [250, 10, 10]).all()
    assert not np.array_equal(photo, out)


def test_identity_restore_leaves_the_photo_nearly_as_it_was():
    photo, landmarks = _photo_with_face(np.random.default_rng(1))
    photo = cv2.GaussianBlur(photo, (0, 0), 1.5)  # smooth: resampling a crop and back costs little
    crop, matrix = align_face(photo, landmarks, 256)
    out = paste_faces(photo, [crop], [matrix], 256)
    assert np.abs(out.astype(int) - photo).mean() < 0.5


def test_upscaled_output_keeps_the_upsampled_background_outside_the_faces():
    photo, landmarks = _photo_with_face(np.random.default_rng(2))
    crop, matrix = align_face(photo, landmarks, 128)
    calls = []

    def nearest(image: np.ndarray, scale: int) -> np.ndarray:
        calls.append(scale)
        return np.repeat(np.repeat(image, scale, 0), scale, 1)

    out = paste_faces(photo, [crop], [matrix], 128, upscale=2, upsampler=nearest)
    assert out.shape == (600, 800, 3) and calls == [2]
    mask = cv2.warpAffine(crop_mask(128, 0.02, 0.06), crop_to_output(matrix, 128, 128, 2), (800, 600))
    np.testing.assert_array_equal(out[mask == 0], nearest(photo, 2)[mask == 0])
    with pytest.raises(ValueError, match="upscale"):
        paste_faces(photo, [crop], [matrix], 128, upscale=0)
    with pytest.raises(ValueError, match="2 restored faces for 1"):
        paste_faces(photo, [crop, crop], [matrix], 128)
