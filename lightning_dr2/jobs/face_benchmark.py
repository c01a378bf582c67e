"""How well a face detector finds faces and places their landmarks, on photos with known answers.

Test photos are composed here, so the true landmarks are exact and nothing is downloaded: synthetic faces
(`datasets.synthetic`, exact landmarks) and the real faces of the packaged photos (scikit-image's
astronaut, matplotlib's Grace Hopper, landmarks hand-annotated once below) are rotated, scaled and pasted
into larger canvases of packaged non-face photos (cat, coffee, bricks, ...: clutter that invites false
detections). `python -m lightning_dr2.jobs.face_benchmark --detector dlib_hog --out faces.json` scores a detector
(docs/faces.md has the numbers).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from lightning_dr2.faces.align import ffhq_template, similarity_to_template, transform_points
from lightning_dr2.faces.detection import DEFAULT_DETECTOR, DETECTORS, build_detector
from lightning_dr2.faces.face import Face, FaceDetector

# Hand-annotated 5 points (pupil centres, nose tip, mouth corners) of the packaged real faces, read off an
# 8x / 6x zoom with a 5 px grid: about +-2 px (mouth corners of Grace Hopper +-4 px).
PACKAGED_LANDMARKS = {
    "astronaut": np.array([(202.5, 101.5), (246.3, 103.1), (223.5, 126.5), (203.8, 140.0), (243.8, 141.3)]),
    "grace_hopper": np.array([(221.7, 188.3), (305.0, 185.8), (265.8, 241.7), (230.0, 279.2), (300.0, 277.5)]),
}
# Packaged photos without a human face, used as canvases (and as false-positive bait).
BACKGROUNDS = ("chelsea", "coffee", "rocket", "brick", "gravel", "grass", "hubble_deep_field", "colorwheel")


@dataclass
class TestPhoto:
    """A photo and the true 5-point landmarks of every face in it."""

    name: str
    image: np.ndarray  # HxWx3 uint8 RGB
    landmarks: list[np.ndarray]  # one (5, 2) array per face


def packaged_photo(name: str) -> np.ndarray:
    """A packaged photo as HxWx3 uint8 RGB: 'astronaut', 'camera', ... (scikit-image), 'grace_hopper'
    (matplotlib). Needs scikit-image for the former (a test dependency)."""
    if name == "grace_hopper":
        import matplotlib

        from lightning_dr2.image_io import read_image

        return read_image(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg")
    import skimage.data

    image = getattr(skimage.data, name)()
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    return np.ascontiguousarray(image[..., :3]).astype(np.uint8)


@lru_cache(maxsize=16)
def _background(name: str) -> np.ndarray:
    return packaged_photo(name)


def _canvas(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """A w x h canvas cut and scaled from a random packaged non-face photo."""
    w, h = size
    src = _background(str(rng.choice(BACKGROUNDS)))
    scale = max(w / src.shape[1], h / src.shape[0]) * rng.uniform(1.0, 1.6)
    big = cv2.resize(src, (int(np.ceil(src.shape[1] * scale)), int(np.ceil(src.shape[0] * scale))))
    y = rng.integers(0, big.shape[0] - h + 1)
    x = rng.integers(0, big.shape[1] - w + 1)
    return np.ascontiguousarray(big[y : y + h, x : x + w])


def _source_faces(synthetic: int, seed: int, real: bool) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(image, landmarks, soft mask) of each face to paste: a head-shaped ellipse, feathered."""
    from lightning_dr2.datasets.synthetic import render_face_with_landmarks

    out = []
    for i in range(synthetic):
        image, landmarks = render_face_with_landmarks(seed * 1000 + i, 256)
        out.append((image, landmarks, _head_mask(image.shape[:2], landmarks)))
    if real:
        for name, landmarks in PACKAGED_LANDMARKS.items():
            image = packaged_photo(name)
            out.append((image, landmarks, _head_mask(image.shape[:2], landmarks)))
    return out


def _head_mask(shape: tuple[int, ...], landmarks: np.ndarray) -> np.ndarray:
    """Soft ellipse around the head (eyes to chin, ear to ear), so a pasted face keeps its hair and chin."""
    eyes = landmarks[:2].mean(0)
    mouth = landmarks[3:].mean(0)
    unit = np.linalg.norm(mouth - eyes)
    centre = eyes + (mouth - eyes) * 0.45
    angle = np.degrees(np.arctan2(*(landmarks[1] - landmarks[0])[::-1]))
    mask = np.zeros(shape, np.float32)
    axes = (int(unit * 1.55), int(unit * 2.0))
    cv2.ellipse(mask, tuple(int(v) for v in centre), axes, angle, 0, 360, 1.0, -1)
    return cv2.GaussianBlur(mask, (0, 0), unit * 0.15)


def composite_photos(
    count: int = 24,
    seed: int = 0,
    size: tuple[int, int] = (640, 480),
    face_px: tuple[float, float] = (24.0, 110.0),
    max_roll: float = 30.0,
    max_faces: int = 3,
    real: bool = True,
) -> list[TestPhoto]:
    """`count` canvases with 1..max_faces faces each, every face rotated by up to +-max_roll degrees and
    scaled to an eye distance drawn log-uniformly from `face_px`; true landmarks carried through."""
    rng = np.random.default_rng(seed)
    sources = _source_faces(max(4, count // 2), seed, real)
    photos = []
    for k in range(count):
        canvas = _canvas(rng, size).astype(np.float32)
        truths: list[np.ndarray] = []
        for _ in range(int(rng.integers(1, max_faces + 1))):
            image, landmarks, mask = sources[int(rng.integers(len(sources)))]
            eye_px = float(np.exp(rng.uniform(*np.log(face_px))))
            scale = eye_px / np.linalg.norm(landmarks[1] - landmarks[0])
            roll = rng.uniform(-max_roll, max_roll)
            for _attempt in range(20):  # a place where the head fits and overlaps no other face
                centre = rng.uniform([0.15 * size[0], 0.15 * size[1]], [0.85 * size[0], 0.85 * size[1]])
                if all(
                    np.linalg.norm(t.mean(0) - centre) > 2.5 * (eye_px + np.linalg.norm(t[1] - t[0])) for t in truths
                ):
                    break
            else:
                continue
            m = cv2.getRotationMatrix2D(tuple(landmarks.mean(0)), roll, scale)
            m[:, 2] += centre - landmarks.mean(0)
            face = cv2.warpAffine(
                image.astype(np.float32), m, size, flags=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
            )
            alpha = cv2.warpAffine(mask, m, size, flags=cv2.INTER_LINEAR)[..., None]
            canvas = canvas * (1 - alpha) + face * alpha
            truths.append(transform_points(m, landmarks))
        photos.append(TestPhoto(f"composite_{seed}_{k:03d}", np.clip(np.rint(canvas), 0, 255).astype(np.uint8), truths))
    return photos


def packaged_photos() -> list[TestPhoto]:
    """The packaged photos as they are: two frontal faces (annotated) and the profile cameraman (no
    5-point truth: a face, but only detection is scored)."""
    photos = [TestPhoto(name, packaged_photo(name), [landmarks]) for name, landmarks in PACKAGED_LANDMARKS.items()]
    return photos


def negative_photos() -> list[TestPhoto]:
    """Packaged photos with no human face: every detection on them is a false positive."""
    return [TestPhoto(name, packaged_photo(name), []) for name in BACKGROUNDS]


def alignment_error(found: np.ndarray, truth: np.ndarray, size: int = 512) -> float:
    """Mean distance (pixels of a size x size crop) between the template points of the crop aligned with
    the found landmarks and of the crop aligned with the true ones: how far the restorer's input moves."""
    template = ffhq_template(size)
    found_m = similarity_to_template(found, size)
    truth_m = similarity_to_template(truth, size)
    inverse = cv2.invertAffineTransform(truth_m)
    return float(
        np.linalg.norm(transform_points(found_m, transform_points(inverse, template)) - template, axis=1).mean()
    )


def match_faces(faces: Sequence[Face], truths: Sequence[np.ndarray]) -> list[tuple[int, int]]:
    """Greedy (truth index, face index) pairs: a face matches a truth when its landmark centre lies within
    half the true eye-to-mouth distance of the true centre."""
    pairs, used = [], set()
    for t, truth in enumerate(truths):
        reach = 0.5 * np.linalg.norm(truth[3:].mean(0) - truth[:2].mean(0))
        dists = [
            np.linalg.norm(f.landmarks.mean(0) - truth.mean(0)) if i not in used else np.inf
            for i, f in enumerate(faces)
        ]
        if dists and min(dists) < reach:
            best = int(np.argmin(dists))
            used.add(best)
            pairs.append((t, best))
    return pairs


def score(
    photos: Sequence[TestPhoto], detections: Sequence[Sequence[Face]], seconds: Sequence[float]
) -> dict[str, Any]:
    """Detection rate, false positives, landmark error (normalised by the eye distance, and as alignment
    error in pixels of a 512 crop), seconds per photo."""
    found = total = false = 0
    nme, crop_px = [], []
    for photo, faces in zip(photos, detections, strict=False):
        pairs = match_faces(faces, photo.landmarks)
        total += len(photo.landmarks)
        found += len(pairs)
        false += len(faces) - len(pairs)
        for t, f in pairs:
            truth, points = photo.landmarks[t], faces[f].landmarks
            nme.append(np.linalg.norm(points - truth, axis=1).mean() / np.linalg.norm(truth[1] - truth[0]))
            crop_px.append(alignment_error(points, truth))
    return {
        "photos": len(photos),
        "faces": total,
        "found": found,
        "detection_rate": round(found / total, 4) if total else None,
        "false_positives": false,
        "landmark_nme_mean": round(float(np.mean(nme)), 4) if nme else None,
        "landmark_nme_median": round(float(np.median(nme)), 4) if nme else None,
        "align_error_px512_mean": round(float(np.mean(crop_px)), 2) if crop_px else None,
        "align_error_px512_median": round(float(np.median(crop_px)), 2) if crop_px else None,
        "align_error_px512_p90": round(float(np.percentile(crop_px, 90)), 2) if crop_px else None,
        "seconds_per_photo": round(float(np.mean(seconds)), 4) if len(seconds) else None,
    }


def run_detector(detector: FaceDetector, photos: Sequence[TestPhoto]) -> tuple[list[list[Face]], list[float]]:
    """Detections and wall seconds per photo."""
    detections, seconds = [], []
    for photo in photos:
        start = time.perf_counter()
        detections.append(detector.detect(photo.image))
        seconds.append(time.perf_counter() - start)
    return detections, seconds


def test_suites(count: int = 24) -> dict[str, list[TestPhoto]]:
    """The measured suites: composites of synthetic + real faces (upright-ish and rolled), packaged
    photos, and face-free photos."""
    return {
        "composites_roll15": composite_photos(count, seed=1, max_roll=15.0),
        "composites_roll30": composite_photos(count, seed=2, max_roll=30.0),
        "composites_small": composite_photos(count, seed=3, face_px=(10.0, 24.0), max_roll=10.0),
        "packaged": packaged_photos(),
        "negatives": negative_photos(),
    }


def measure(detector: FaceDetector, count: int = 24) -> dict[str, Any]:
    """Every suite scored for one detector, with the machine named."""
    results: dict[str, Any] = {
        "detector": detector.name,
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        },
    }
    for name, photos in test_suites(count).items():
        detections, seconds = run_detector(detector, photos)
        results[name] = score(photos, detections, seconds)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--detector", default=DEFAULT_DETECTOR, choices=list(DETECTORS))
    parser.add_argument("--count", type=int, default=24, help="photos per composite suite")
    parser.add_argument("--weights-dir", default=None, help="folder of RetinaFace weights (else the usual lookup)")
    parser.add_argument("--out", default=None, help="write the JSON here (else stdout)")
    args = parser.parse_args(argv)
    options = {"weights_dir": args.weights_dir} if args.detector.startswith("retinaface") else {}
    text = json.dumps(measure(build_detector(args.detector, **options), args.count), indent=2)
    if args.out:
        from lightning_dr2.files import atomic_write

        atomic_write(args.out, text + "\n")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
