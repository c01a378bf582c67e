"""The RetinaFace face detector: the network of `nets.retinaface` with its prior boxes, decoding and NMS.

Conventions of the released weights (facexlib's `detection_Resnet50_Final.pth`, `detection_mobilenet0.25_Final.pth`),
kept here: BGR input minus the mean (104, 117, 123), no scaling; priors (cx, cy, w, h) normalised by the image
size; offsets decoded with variances (0.1, 0.2).
"""

from __future__ import annotations

from math import ceil
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision

from lightning_dr2.faces.face import Face, check_photo, sort_faces
from lightning_dr2.nets.retinaface import ARCHS, STEPS, RetinaFace

MIN_SIZES = ((16, 32), (64, 128), (256, 512))  # anchor sides (pixels) per level
VARIANCES = (0.1, 0.2)
BGR_MEAN = (104.0, 117.0, 123.0)


def prior_boxes(height: int, width: int) -> torch.Tensor:
    """(P, 4) anchors (cx, cy, w, h) normalised by the image size, in the heads' output order: level by
    level (stride 8, 16, 32), row by row, column by column, then each of the level's two anchor sizes."""
    priors = []
    for step, sizes in zip(STEPS, MIN_SIZES, strict=False):
        rows, cols = ceil(height / step), ceil(width / step)
        cy, cx = torch.meshgrid(
            (torch.arange(rows, dtype=torch.float64) + 0.5) * step / height,
            (torch.arange(cols, dtype=torch.float64) + 0.5) * step / width,
            indexing="ij",
        )
        per_size = [
            torch.stack([cx, cy, torch.full_like(cx, s / width), torch.full_like(cy, s / height)], -1) for s in sizes
        ]
        priors.append(torch.stack(per_size, dim=2).reshape(-1, 4))  # the anchor size varies fastest
    return torch.cat(priors).float()


def decode_boxes(offsets: torch.Tensor, priors: torch.Tensor) -> torch.Tensor:
    """(..., P, 4) offsets -> (x0, y0, x1, y1) in the priors' normalised units."""
    centre = priors[..., :2] + offsets[..., :2] * VARIANCES[0] * priors[..., 2:]
    size = priors[..., 2:] * torch.exp(offsets[..., 2:] * VARIANCES[1])
    return torch.cat([centre - size / 2, centre + size / 2], dim=-1)


def decode_landmarks(offsets: torch.Tensor, priors: torch.Tensor) -> torch.Tensor:
    """(..., P, 10) offsets -> (..., P, 5, 2) landmark (x, y) in the priors' normalised units."""
    points = offsets.reshape(*offsets.shape[:-1], 5, 2)
    return priors[..., None, :2] + points * VARIANCES[0] * priors[..., None, 2:]


# --- the detector -------------------------------------------------------------------------------------------


def load_retinaface(arch: str, weights: str | Path | None = None, weights_dir: str | Path | None = None) -> RetinaFace:
    """RetinaFace `arch` with its released weights: the file `weights`, else the registered file name found
    through the weights lookup (`$DR2_WEIGHTS`, data/weights, ...; MissingWeightsError says how to fetch it)."""
    from lightning_dr2.nets.loading import load_into, read_state_dict
    from lightning_dr2.weights import find_weight

    model = RetinaFace(arch)
    path = Path(weights) if weights is not None else find_weight(ARCHS[arch].weights, weights_dir)
    state = read_state_dict(path)  # strips the 'module.' prefix of the DataParallel-saved originals
    # BatchNorm counters are bookkeeping, not weights: files saved without them load all the same.
    for key, value in model.state_dict().items():
        if key.endswith("num_batches_tracked"):
            state.setdefault(key, value)
    return load_into(model, state, path).eval()


class RetinaFaceDetector:
    """`FaceDetector` over RetinaFace: photos at their own size (or shrunk to `max_side`), faces scoring at
    least `score_threshold` (facexlib's face helper uses 0.97), overlapping boxes merged by NMS at IoU
    `nms_iou` (0.4, the release's value)."""

    def __init__(
        self,
        arch: str = "resnet50",
        weights: str | Path | None = None,
        weights_dir: str | Path | None = None,
        device: str | torch.device = "cpu",
        score_threshold: float = 0.97,
        nms_iou: float = 0.4,
        max_side: int | None = 2048,
        model: RetinaFace | None = None,
    ) -> None:
        self.name = f"retinaface_{arch}"
        self.device = torch.device(device)
        self.model = (
            (model if model is not None else load_retinaface(arch, weights, weights_dir)).to(self.device).eval()
        )
        self.score_threshold = float(score_threshold)
        self.nms_iou = float(nms_iou)
        self.max_side = max_side

    @torch.no_grad()
    def detect(self, image: np.ndarray) -> list[Face]:
        image = check_photo(image)
        h, w = image.shape[:2]
        x = torch.from_numpy(np.ascontiguousarray(image[..., ::-1])).to(self.device).permute(2, 0, 1)[None].float()
        x = x - torch.tensor(BGR_MEAN, device=self.device).view(1, 3, 1, 1)
        factor = 1.0
        if self.max_side is not None and max(h, w) > self.max_side:
            factor = self.max_side / max(h, w)
            x = F.interpolate(x, size=(round(h * factor), round(w * factor)), mode="bilinear", antialias=True)
        offsets, scores, landmark_offsets = self.model(x)
        priors = prior_boxes(*x.shape[-2:]).to(self.device)
        keep = scores[0] >= self.score_threshold
        size = torch.tensor([w, h], device=self.device, dtype=torch.float32)  # priors are size-normalised
        boxes = decode_boxes(offsets[0][keep], priors[keep]) * size.repeat(2)
        points = decode_landmarks(landmark_offsets[0][keep], priors[keep]) * size
        scores = scores[0][keep]
        kept = torchvision.ops.nms(boxes, scores, self.nms_iou)
        return sort_faces(
            Face(
                box=tuple(float(v) for v in boxes[i]),
                score=float(scores[i]),
                landmarks=points[i].double().cpu().numpy(),
            )
            for i in kept.tolist()
        )
