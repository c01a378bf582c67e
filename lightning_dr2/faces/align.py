"""Alignment of a face to the FFHQ 5-point template: a similarity transform (rotation, uniform scale,
translation) from the photo's landmarks to the template at the restorer's input size, and the warp.

The template is the one facexlib, GFPGAN and CodeFormer align with (the mean RetinaFace landmarks of FFHQ
at 512x512), so a crop made here is what released restorers were trained and tested on. A similarity, not
a full affine transform: a face is never sheared or squeezed, whatever the landmark noise.
"""

from __future__ import annotations

import cv2
import numpy as np

# (x, y) at 512x512: left eye centre, right eye centre, nose tip, left and right mouth corners (as seen).
FFHQ_TEMPLATE_512 = np.array(
    [
        [192.98138, 239.94708],
        [318.90277, 240.19360],
        [256.63416, 314.01935],
        [201.26117, 371.41043],
        [313.08905, 371.15118],
    ]
)

# Grey the template area outside the photo is filled with (facexlib's value): a neutral colour that a
# restorer leaves alone, which the paste-back mask keeps out of the photo anyway.
BORDER_GREY = (132, 133, 135)


def ffhq_template(size: int) -> np.ndarray:
    """The FFHQ 5-point template for a size x size crop, (5, 2) float (x, y)."""
    if size < 16:
        raise ValueError(f"aligned face size must be at least 16 pixels, got {size}")
    return FFHQ_TEMPLATE_512 * (size / 512.0)


def check_landmarks(landmarks: np.ndarray) -> np.ndarray:
    """(5, 2) finite float landmarks, or a ValueError saying what was given."""
    points = np.asarray(landmarks, dtype=np.float64)
    if points.shape != (5, 2) or not np.isfinite(points).all():
        raise ValueError(f"expected 5 finite (x, y) landmarks, got an array of shape {points.shape}")
    return points


def similarity_to_template(landmarks: np.ndarray, size: int) -> np.ndarray:
    """2x3 matrix of the similarity that maps the photo's 5 landmarks onto the template at `size`.

    `cv2.estimateAffinePartial2D` with LMedS, as facexlib/GFPGAN/CodeFormer do: the same crops as those
    tools for the same landmarks, and one badly placed landmark (a mouth corner under a hand) does not drag
    the others. OpenCV seeds its sampler, so a result is reproducible.
    """
    points = check_landmarks(landmarks)
    matrix, _ = cv2.estimateAffinePartial2D(points, ffhq_template(size), method=cv2.LMEDS)
    if matrix is None:  # degenerate landmarks (all on one point): no similarity fits
        raise ValueError(f"no similarity transform fits the landmarks {points.round(1).tolist()}")
    return matrix


def transform_points(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine matrix to (N, 2) points."""
    return np.asarray(points, np.float64) @ matrix[:, :2].T + matrix[:, 2]


def matrix_scale(matrix: np.ndarray) -> float:
    """The scale factor of a similarity matrix (template pixels per photo pixel)."""
    return float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))


def crop_footprint(matrix: np.ndarray, size: int) -> np.ndarray:
    """The 4 corners (x, y) of a size x size crop mapped back into the photo."""
    corners = np.array([[0, 0], [size, 0], [size, size], [0, size]], np.float64) - 0.5
    return transform_points(cv2.invertAffineTransform(matrix), corners)


def warp_face(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """The size x size aligned crop of `image` under `matrix` (bilinear; grey outside the photo).

    A face larger in the photo than in the crop is first blurred with scikit-image's anti-aliasing sigma,
    (1/scale - 1) / 2, over the part of the photo the crop covers only: bilinear sampling alone skips pixels
    and aliases (hair, fabric, JPEG blocks would turn into moire).
    """
    scale = matrix_scale(matrix)
    if scale < 1.0:
        sigma = (1.0 / scale - 1.0) / 2.0
        h, w = image.shape[:2]
        corners = crop_footprint(matrix, size)
        margin = int(np.ceil(3 * sigma)) + 2
        x0, y0 = np.maximum(np.floor(corners.min(0)).astype(int) - margin, 0)
        x1, y1 = np.minimum(np.ceil(corners.max(0)).astype(int) + margin, [w, h])
        if x1 > x0 and y1 > y0:
            image = cv2.GaussianBlur(image[y0:y1, x0:x1], (0, 0), sigma)
            matrix = matrix.copy()
            matrix[:, 2] += matrix[:, :2] @ np.array([x0, y0], np.float64)
    return cv2.warpAffine(
        image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=BORDER_GREY
    )


def align_face(image: np.ndarray, landmarks: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(aligned size x size crop, 2x3 photo -> crop matrix) of the face with these 5 landmarks."""
    matrix = similarity_to_template(landmarks, size)
    return warp_face(image, matrix, size), matrix
