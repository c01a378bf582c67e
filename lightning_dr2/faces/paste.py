"""Paste restored faces back into the photo: inverse similarity warp, feathered and eroded mask.

The mask is built in crop space, so its feathering is a fixed fraction of the face whatever the photo's
resolution: zero over an `erode` margin at the crop border (the crop's outermost pixels carry the
interpolation ramp and, near photo edges, the grey fill), then a smooth ramp over `feather` of the crop.
Where the warped mask is exactly zero the output keeps the background's bytes, so nothing outside the faces
changes: no colour shift, no resampling (with `upscale` 1 the background is the input photo itself).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import cv2
import numpy as np

BackgroundUpsampler = Callable[[np.ndarray, int], np.ndarray]
"""(HxWx3 uint8 photo, integer scale) -> (H*scale)x(W*scale)x3 uint8: what is behind the faces."""


def bicubic_upsampler(image: np.ndarray, scale: int) -> np.ndarray:
    """The default background: bicubic resize (the photo itself at scale 1, byte for byte)."""
    if scale == 1:
        return image
    h, w = image.shape[:2]
    return cv2.resize(image, (w * scale, h * scale), interpolation=cv2.INTER_CUBIC)


def crop_mask(size: int, erode: float, feather: float) -> np.ndarray:
    """size x size float32 mask: 0 within `erode * size` of the border, smoothstep up to 1 over the next
    `feather * size` pixels, 1 inside."""
    if not (0 <= erode and 0 <= feather and erode + feather < 0.5):
        raise ValueError(f"need erode >= 0, feather >= 0 and erode + feather < 0.5, got {erode}, {feather}")
    centres = np.arange(size, dtype=np.float32) + 0.5
    edge = np.minimum(centres, size - centres)  # distance of each pixel centre to the crop border
    ramp = np.clip((edge - erode * size) / max(feather * size, 1e-6), 0.0, 1.0)
    ramp = ramp * ramp * (3 - 2 * ramp)  # smoothstep: no visible kink where the ramp starts and ends
    return np.minimum(ramp[:, None], ramp[None, :])


def _as3x3(matrix: np.ndarray) -> np.ndarray:
    return np.vstack([matrix, [0.0, 0.0, 1.0]])


def _rescale(factor: float) -> np.ndarray:
    """Pixel-centre-exact scaling by `factor` (pixel i's centre at i): x -> (x + 0.5) * factor - 0.5."""
    return np.array([[factor, 0, 0.5 * factor - 0.5], [0, factor, 0.5 * factor - 0.5], [0, 0, 1.0]])


def crop_to_output(matrix: np.ndarray, crop_size: int, restored_size: int, upscale: int) -> np.ndarray:
    """2x3 map from restored-crop pixels to output-photo pixels, given `matrix` (photo -> aligned crop of
    side `crop_size`); the restorer may return another size (DR2E: 256 in, 512 out) and the output may be
    the photo upscaled by `upscale`."""
    to_crop = _rescale(crop_size / restored_size)
    to_photo = _as3x3(cv2.invertAffineTransform(matrix))
    return (_rescale(float(upscale)) @ to_photo @ to_crop)[:2]


def paste_face(background: np.ndarray, face: np.ndarray, crop_to_out: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Blend one restored face (SxSx3 uint8) into `background` (modified in place and returned) through the
    2x3 map `crop_to_out` and the crop-space `mask` (SxS float). Only the face's footprint is touched."""
    s = face.shape[0]
    if face.shape[:2] != mask.shape or face.shape != (s, s, 3) or face.dtype != np.uint8:
        raise ValueError(
            f"restored face must be a square uint8 RGB image the size of the mask, got {face.dtype} {face.shape}"
        )
    h, w = background.shape[:2]
    corners = np.array([[-0.5, -0.5], [s - 0.5, -0.5], [s - 0.5, s - 0.5], [-0.5, s - 0.5]]) @ crop_to_out[:, :2].T
    corners += crop_to_out[:, 2]
    x0, y0 = np.maximum(np.floor(corners.min(0)).astype(int) - 1, 0)
    x1, y1 = np.minimum(np.ceil(corners.max(0)).astype(int) + 2, [w, h])
    if x1 <= x0 or y1 <= y0:
        return background  # the face lies entirely outside the output
    to_roi = crop_to_out.copy()
    to_roi[:, 2] -= (x0, y0)
    roi_size = (int(x1 - x0), int(y1 - y0))
    warped = cv2.warpAffine(face, to_roi, roi_size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    alpha = cv2.warpAffine(
        mask, to_roi, roi_size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )
    roi = background[y0:y1, x0:x1]
    inside = alpha > 0
    a = alpha[inside][:, None]
    roi[inside] = np.clip(np.rint(roi[inside] * (1 - a) + warped[inside] * a), 0, 255).astype(np.uint8)
    return background


def paste_faces(
    photo: np.ndarray,
    faces: Sequence[np.ndarray],
    matrices: Sequence[np.ndarray],
    crop_size: int,
    upscale: int = 1,
    erode: float = 0.02,
    feather: float = 0.06,
    upsampler: BackgroundUpsampler = bicubic_upsampler,
) -> np.ndarray:
    """The photo (upscaled by `upscale` with `upsampler`) with each restored face pasted where it was found.

    `matrices[i]` maps the photo to the aligned crop (side `crop_size`) that `faces[i]` restores. Faces
    are pasted in the order given (the pipeline gives largest first, so a small face in front of a large
    one stays on top).
    """
    if len(faces) != len(matrices):
        raise ValueError(f"{len(faces)} restored faces for {len(matrices)} alignment matrices")
    if int(upscale) != upscale or upscale < 1:
        raise ValueError(f"upscale must be a whole number >= 1, got {upscale}")
    out = np.array(upsampler(photo, int(upscale)), dtype=np.uint8, copy=True)
    h, w = photo.shape[:2]
    if out.shape != (h * upscale, w * upscale, 3):
        raise ValueError(f"background upsampler returned {out.shape}, expected {(h * upscale, w * upscale, 3)}")
    masks: dict[int, np.ndarray] = {}
    for face, matrix in zip(faces, matrices, strict=False):
        size = face.shape[0]
        if size not in masks:
            masks[size] = crop_mask(size, erode, feather)
        paste_face(out, face, crop_to_output(matrix, crop_size, size, int(upscale)), masks[size])
    return out
