"""A detected face: box, score and the 5 FFHQ landmarks, in the convention every detector returns.

Landmarks are in the FFHQ template's order: left eye centre, right eye centre, nose tip, left mouth corner,
right mouth corner, "left" and "right" as seen in the image (the person's right eye is the image's left eye).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")


@dataclass(frozen=True)
class Face:
    """A detected face in photo pixel coordinates (x right, y down, pixel centres at integers)."""

    box: tuple[float, float, float, float]  # x0, y0, x1, y1
    score: float  # the detector's own confidence scale: compare scores of one detector only
    landmarks: np.ndarray  # (5, 2) float (x, y), LANDMARK_NAMES order

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: box, score and landmarks by name (the per-face manifest row)."""
        return {
            "box": [round(float(v), 2) for v in self.box],
            "score": round(float(self.score), 4),
            "landmarks": {
                name: [round(float(x), 2), round(float(y), 2)]
                for name, (x, y) in zip(LANDMARK_NAMES, self.landmarks, strict=True)
            },
        }


@runtime_checkable
class FaceDetector(Protocol):
    """Anything with `detect(rgb) -> list[Face]`: rgb is an HxWx3 uint8 RGB photo (`image_io.read_image`)."""

    name: str

    def detect(self, image: np.ndarray) -> list[Face]: ...


def check_photo(image: np.ndarray) -> np.ndarray:
    """The HxWx3 uint8 RGB array every detector takes, or a ValueError saying what was given."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 1:
        raise ValueError(
            f"face detection takes an HxWx3 uint8 RGB photo (lightning_dr2.image_io.read_image gives one); "
            f"got {image.dtype} {image.shape}"
        )
    return image


def sort_faces(faces: Sequence[Face]) -> list[Face]:
    """Largest box first (then score): a stable, meaningful order for numbering faces in a photo."""
    return sorted(faces, key=lambda f: (-f.area, -f.score))
