"""Whole photos: detect -> align -> restore the crops -> paste back. `restore_photo` does all four for one
photo; the restore job calls `find_faces` and `paste_back` around its own batched, multi-GPU restorer."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from lightning_dr2.faces.align import align_face, matrix_scale
from lightning_dr2.faces.config import FaceConfig, check_face_config, detector_options
from lightning_dr2.faces.detection import build_detector
from lightning_dr2.faces.face import Face, FaceDetector, check_photo
from lightning_dr2.faces.paste import BackgroundUpsampler, bicubic_upsampler, paste_faces

RestoreFn = Callable[[list[np.ndarray]], Sequence[np.ndarray]]
"""Aligned crops (SxSx3 uint8 RGB) -> restored crops (any one square size, uint8 RGB), same order."""


@dataclass
class AlignedFace:
    """A face kept for restoration: what was detected, the photo -> crop matrix and the aligned crop."""

    face: Face
    matrix: np.ndarray  # 2x3, photo pixels -> crop pixels
    crop: np.ndarray  # size x size x 3 uint8

    @property
    def face_px(self) -> float:
        """Side of the square of the photo that the aligned crop covers."""
        return self.crop.shape[0] / matrix_scale(self.matrix)


@dataclass
class PhotoFaces:
    """The faces of one photo: those kept (largest first) and those skipped for being too small."""

    photo: np.ndarray
    crop_size: int
    faces: list[AlignedFace] = field(default_factory=list)
    too_small: list[Face] = field(default_factory=list)
    not_selected: int = 0  # detected, large enough, but not the largest with select=largest

    def manifest(self) -> dict[str, Any]:
        """JSON-ready record of the photo's faces (the per-photo manifest of restore mode=photos)."""
        return {
            "height": int(self.photo.shape[0]),
            "width": int(self.photo.shape[1]),
            "detected": len(self.faces) + len(self.too_small) + self.not_selected,
            "restored": len(self.faces),
            "skipped_too_small": len(self.too_small),
            "skipped_not_largest": self.not_selected,
            "faces": [
                {
                    "index": i,
                    **a.face.to_dict(),
                    "face_px": round(a.face_px, 1),
                    "matrix": np.round(a.matrix, 6).tolist(),
                }
                for i, a in enumerate(self.faces)
            ],
        }


def face_detector(cfg: FaceConfig, device: str | torch.device = "cpu") -> FaceDetector:
    """The detector a face config asks for (RetinaFace on `device`; dlib always runs on the CPU)."""
    cfg = check_face_config(cfg)
    options = detector_options(cfg)
    if cfg.detector.startswith("retinaface"):
        options["device"] = device
    return build_detector(cfg.detector, **options)


def find_faces(photo: np.ndarray, detector: FaceDetector, crop_size: int, cfg: FaceConfig) -> PhotoFaces:
    """Detect, drop faces under `cfg.min_face_px`, keep all or the largest, and align each to the FFHQ
    template at `crop_size`."""
    photo = check_photo(photo)
    found = PhotoFaces(photo, crop_size)
    for face in detector.detect(photo):  # largest first
        crop, matrix = align_face(photo, face.landmarks, crop_size)
        aligned = AlignedFace(face, matrix, crop)
        if aligned.face_px < cfg.min_face_px:
            found.too_small.append(face)
        elif cfg.select == "largest" and found.faces:
            found.not_selected += 1
        else:
            found.faces.append(aligned)
    return found


def paste_back(
    found: PhotoFaces, restored: Sequence[np.ndarray], cfg: FaceConfig, upsampler: BackgroundUpsampler | None = None
) -> np.ndarray:
    """The photo with `restored[i]` (the restoration of `found.faces[i].crop`) pasted back, upscaled by
    `cfg.upscale` (background by `upsampler`, default bicubic)."""
    return paste_faces(
        found.photo,
        list(restored),
        [a.matrix for a in found.faces],
        found.crop_size,
        upscale=cfg.upscale,
        erode=cfg.erode,
        feather=cfg.feather,
        upsampler=upsampler or bicubic_upsampler,
    )


def restore_photo(
    photo: np.ndarray,
    detector: FaceDetector,
    restore_fn: RestoreFn,
    crop_size: int,
    cfg: FaceConfig | None = None,
    upsampler: BackgroundUpsampler | None = None,
) -> tuple[np.ndarray, PhotoFaces]:
    """(restored photo, its faces) for one HxWx3 uint8 RGB photo; a photo without faces comes back as it
    is (upscaled by `cfg.upscale`) and restore_fn is not called."""
    cfg = check_face_config(cfg if cfg is not None else FaceConfig())
    found = find_faces(photo, detector, crop_size, cfg)
    restored = list(restore_fn([a.crop for a in found.faces])) if found.faces else []
    if len(restored) != len(found.faces):
        raise ValueError(f"restore_fn returned {len(restored)} faces for {len(found.faces)} crops")
    return paste_back(found, restored, cfg, upsampler), found


def tensor_restorer(restore: Callable[[torch.Tensor], torch.Tensor], device: str | torch.device = "cpu") -> RestoreFn:
    """A RestoreFn over a network-style restorer, (B, 3, H, W) in [-1, 1] -> (B, 3, H', W') in [-1, 1]
    (e.g. `DR2E.restore`): crops in, uint8 crops out, quantised like every saved output."""
    from lightning_dr2.image_io import images_to_tensor, to_uint8_images

    def run(crops: list[np.ndarray]) -> list[np.ndarray]:
        with torch.no_grad():
            return to_uint8_images(restore(images_to_tensor(crops).to(device)))

    return run
