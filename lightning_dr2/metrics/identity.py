"""Identity distance "Deg": the angle between ArcFace embeddings of restored and ground-truth faces.

This is VQFR's `metrics/calculate_cos_dist.py` (GFPGAN/VQFR/CodeFormer-era BFR papers report it), which
we matched step by step:

* each image is read with `cv2.imread(path, 0)` (8-bit gray), resized with `cv2.resize(..., (128, 128),
  INTER_LINEAR)` and mapped with (x - 127.5) / 127.5: one 1x128x128 gray image per face, no horizontal
  flip and no concatenation of flipped embeddings (the script has the flip commented out). We get the
  same input bit-exactly from tensors with `arcface_preprocess` (`gray="imread"`: libpng's RGB->gray) for
  PNG files. For JPEG files OpenCV decodes straight to gray (libjpeg's luminance, no RGB round trip); the
  RGB->gray of the decoded colours differs from it on about half of the pixels by a few levels. So `eval`
  reads JPEG files' gray with `cv2.imread(path, 0)` itself (`io.read_jpeg_gray`) and passes it to
  `update` as `preds_gray` / `target_gray`, used instead of the RGB conversion. Not when `eval` resizes the
  output to its ground truth's size first: the file's gray is not the resized image's, so such outputs go
  through the RGB path;
* `resnet_face18(use_se=False)` with `resnet18_110.pth`, eval mode; its 512-d output is used directly
  (the script stacks [gt, restored] in one batch; BatchNorm in eval mode makes that irrelevant);
* cos = <a, b> / (|a| |b|), deg = arccos(cos) / pi * 180;
* pairs with deg < 1 are "almost identical": counted, not averaged; the score is the mean over the rest.

Deliberate differences: the cosine is computed in float64 (the script: float32 numpy; the angles agree to
~1e-3 deg), and it is clamped to [-1, 1] before arccos (the script would get NaN from a rounding overshoot
and poison its mean; here such a pair is 0 deg, i.e. identical). With no non-identical pair the score is
NaN (the script divides by zero).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from lightning_dr2.image_io import checked_value_range
from lightning_dr2.metrics.network_metric import NetworkMetric
from lightning_dr2.nets.arcface import arcface_input_from_gray, arcface_preprocess, load_arcface

__all__ = ["ARCFACE_WEIGHTS_NAME", "IdentityDistance", "pair_degrees"]

ARCFACE_WEIGHTS_NAME = "resnet18_110.pth"


def pair_degrees(emb_a: Tensor, emb_b: Tensor) -> Tensor:
    """Angle in degrees (float64, shape B) between paired embeddings (B, D)."""
    a, b = emb_a.to(torch.float64), emb_b.to(torch.float64)
    cos = (a * b).sum(dim=1) / (a.norm(dim=1) * b.norm(dim=1))
    return torch.arccos(cos.clamp(-1.0, 1.0)) / math.pi * 180.0


class IdentityDistance(NetworkMetric):
    """Mean identity angle (degrees) between restored and ground-truth faces, excluding identical pairs.

    Args:
        network: embedding network, (B, 1, 128, 128) in [-1, 1] -> (B, D); default `ResNetFace18` with
            `resnet18_110.pth` located by `find_weight` (in `weights_dir`, `$DR2_WEIGHTS`, `data/weights`).
        value_range: range of the images passed to `update` ((0, 255) for uint8 tensors).
        gray: RGB -> gray conversion passed to `arcface_preprocess` ("imread": the script's; "cvtcolor").
        threshold_deg: pairs closer than this are counted as identical and left out of the mean (VQFR: 1).

    States (float64, summed across processes): `sum_deg`, `count` (non-identical pairs), `identical`.
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = False

    sum_deg: Tensor
    count: Tensor
    identical: Tensor

    def __init__(
        self,
        network: nn.Module | None = None,
        weights_dir: str | os.PathLike | None = None,
        value_range: Sequence[float] = (-1.0, 1.0),
        gray: Literal["imread", "cvtcolor"] = "imread",
        threshold_deg: float = 1.0,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.value_range = checked_value_range(value_range)
        self.gray = gray
        self.threshold_deg = float(threshold_deg)
        if network is None:
            from lightning_dr2.weights import find_weight  # here: only the default network needs a lookup

            network = load_arcface(find_weight(ARCFACE_WEIGHTS_NAME, weights_dir=weights_dir))
        self.net = network.eval().requires_grad_(False)
        for name in ("sum_deg", "count", "identical"):
            self.add_state(name, default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def _preprocess(self, images: Tensor, gray: Tensor | None = None) -> Tensor:
        if gray is not None:
            if gray.shape != (images.shape[0], *images.shape[-2:]):
                raise ValueError(f"gray levels {tuple(gray.shape)} do not match the images {tuple(images.shape)}")
            return arcface_input_from_gray(gray.to(images.device))
        return arcface_preprocess(images, value_range=self.value_range, gray=self.gray)

    def _network(self, x: Tensor) -> Tensor:
        with torch.no_grad(), torch.autocast(device_type=x.device.type, enabled=False):
            return self.net(x.float()).float()

    def embed(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) RGB images in `value_range` -> (B, D) float32 embeddings (fp32, autocast off)."""
        return self._network(self._preprocess(images))

    def update(
        self, preds: Tensor, target: Tensor, preds_gray: Tensor | None = None, target_gray: Tensor | None = None
    ) -> None:
        """Add a batch of restored (`preds`) and ground-truth (`target`) faces, (B, 3, H, W) each.

        The two may differ in size (each is resized to 128x128), not in batch size. `preds_gray` /
        `target_gray`: the images' 8-bit gray levels (B, H, W) as decoded from their files (JPEG), used
        instead of converting the RGB images (see the module docstring).
        """
        if preds.dim() != 4 or target.dim() != 4 or preds.shape[0] != target.shape[0]:
            raise ValueError(
                f"preds and target must be (B, 3, H, W) batches of equal B, got {tuple(preds.shape)} and "
                f"{tuple(target.shape)}"
            )
        n = preds.shape[0]
        # one forward pass for both, like the script's stacked [gt, restored] batch
        emb = self._network(torch.cat([self._preprocess(target, target_gray), self._preprocess(preds, preds_gray)]))
        emb_target, emb_preds = emb[:n], emb[n:]
        deg = pair_degrees(emb_preds, emb_target)
        if not bool(torch.isfinite(deg).all()):
            raise ValueError("identity embeddings gave a NaN angle (a zero or non-finite embedding)")
        same = deg < self.threshold_deg
        self.last_values = deg.detach()  # per-pair angles of this batch (identical pairs included)
        self.sum_deg += deg[~same].sum()
        self.count += (~same).sum()
        self.identical += same.sum()

    def compute(self) -> Tensor:
        """Mean angle in degrees over the non-identical pairs; NaN if there are none."""
        if float(self.count) == 0:
            return torch.tensor(float("nan"), dtype=torch.float64)
        return self.sum_deg / self.count

    def identical_count(self) -> int:
        """Number of pairs closer than `threshold_deg` (all processes, under DDP)."""
        with self.sync_context():
            return int(round(float(self.identical)))
