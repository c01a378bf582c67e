"""PSNR and SSIM with the BasicSR protocol, the one the blind-face-restoration papers report.

BasicSR (`basicsr/metrics/psnr_ssim.py`, `calculate_psnr` / `calculate_ssim`) scores images saved as
uint8 PNGs, one image at a time, in float64: PSNR = 10 log10(255^2 / MSE); SSIM with an 11x11 Gaussian
window (sigma 1.5) over the valid region, per channel, then the mean over channels; the dataset number is
the mean of the per-image values. We reproduce that to float64 rounding, but batched in torch so it runs
on the GPU inside the evaluation callback:

* `lightning_dr2.image_io.to_uint8` quantises [-1, 1] network outputs exactly like BasicSR's `tensor2img` (clamp, scale,
  round half to even in float32), i.e. what would be written to the PNG;
* `psnr_per_image` / `ssim_per_image` take uint8 N x C x H x W tensors;
* `PSNR` and `SSIM` are torchmetrics Metrics holding float64 sum/count (summed across processes).

A second protocol, `protocol="vqfr"`, is VQFR's `metric_paper/calculate_psnr_ssim.py` with its default
`--correct_mean_var`: before scoring, each channel of the restored image is shifted and scaled (twice, in
float32, population std) to the ground truth's mean and std, and the corrected float image is scored
without re-quantisation. Colour shifts then cost nothing, so its numbers are higher: a different column
(`psnr_vqfr`, `ssim_vqfr` in the metric catalogue), never mixed with BasicSR's.

Identical images have infinite PSNR in BasicSR. `psnr_per_image` returns inf like BasicSR; the `PSNR`
metric caps every per-image value at `max_psnr` (default 100 dB) so one identical pair cannot turn the
dataset mean into inf, and counts the identical pairs in its `identical` state. `max_psnr=None` gives
BasicSR's behaviour (an inf mean).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric

from lightning_dr2.image_io import checked_value_range, to_uint8

# ITU-R BT.601 Y on the 16-235 scale, RGB order (BasicSR's rgb2ycbcr(y_only=True)).
_Y_WEIGHTS = (65.481, 128.553, 24.966)
_SSIM_C1 = (0.01 * 255) ** 2
_SSIM_C2 = (0.03 * 255) ** 2


def _as_batch(name: str, images: Tensor, float_input: bool = False) -> Tensor:
    if not isinstance(images, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(images).__name__}")
    if images.dtype != torch.uint8 and not (float_input and images.is_floating_point()):
        raise ValueError(f"{name} must be uint8 (0-255; use to_uint8 first), got {images.dtype}")
    if images.ndim == 3:
        images = images.unsqueeze(0)
    if images.ndim != 4:
        raise ValueError(f"{name} must be N x C x H x W (or C x H x W), got shape {tuple(images.shape)}")
    return images


def _prepare(
    img: Tensor, img2: Tensor, crop_border: int, y_channel: bool, float_input: bool = False
) -> tuple[Tensor, Tensor]:
    """Shape checks, border crop and the optional Y conversion; returns float64 N x C x H x W.

    `float_input` admits float images on 0-255 for `img` (VQFR-corrected outputs); otherwise uint8 only,
    so that [-1, 1] network outputs passed by mistake fail instead of giving a wrong number.
    """
    img, img2 = _as_batch("img", img, float_input), _as_batch("img2", img2)
    if img.shape != img2.shape:
        raise ValueError(f"image shapes differ: {tuple(img.shape)} vs {tuple(img2.shape)}")
    if crop_border < 0:
        raise ValueError(f"crop_border must be >= 0, got {crop_border}")
    if crop_border:
        img = img[..., crop_border:-crop_border, crop_border:-crop_border]
        img2 = img2[..., crop_border:-crop_border, crop_border:-crop_border]
    if y_channel:
        return _y_channel(img), _y_channel(img2)
    return img.double(), img2.double()


def _y_channel(img: Tensor) -> Tensor:
    """BasicSR's `to_y_channel`, including its dtype steps (float32 in, float64 dot, float32 out)."""
    if img.shape[1] != 3:
        raise ValueError(f"y_channel needs 3-channel RGB images, got {img.shape[1]} channels")
    x = (img.float() / 255.0).double()
    y = x[:, 0:1] * _Y_WEIGHTS[0] + x[:, 1:2] * _Y_WEIGHTS[1] + x[:, 2:3] * _Y_WEIGHTS[2] + 16.0
    return ((y / 255.0).float() * 255.0).double()


PROTOCOLS = ("basicsr", "vqfr")


def correct_mean_var(restored: Tensor, gt: Tensor) -> Tensor:
    """VQFR's `--correct_mean_var` on uint8 (or 0-255) N x C x H x W images; returns float32 on 0-255.

    Per channel, in float32 on [0, 1] like the script: subtract the mean, add the GT's; divide by the
    (population) std, multiply by the GT's; the script does both steps twice. A constant channel (std 0,
    where the script would divide by zero) is only shifted.
    """
    x, g = restored.float() / 255.0, gt.float() / 255.0
    mean_g = g.mean(dim=(2, 3), keepdim=True)
    std_g = g.std(dim=(2, 3), unbiased=False, keepdim=True)
    for _ in range(2):
        x = x - x.mean(dim=(2, 3), keepdim=True) + mean_g
        std = x.std(dim=(2, 3), unbiased=False, keepdim=True)
        x = torch.where(std > 0, x / std.clamp_min(torch.finfo(x.dtype).tiny) * std_g, x)
    return x * 255.0


def psnr_per_image(
    img: Tensor, img2: Tensor, crop_border: int = 0, y_channel: bool = False, float_input: bool = False
) -> Tensor:
    """Per-image PSNR in dB (float64, shape N) of uint8 images; inf for identical images, as in BasicSR."""
    a, b = _prepare(img, img2, crop_border, y_channel, float_input)
    mse = ((a - b) ** 2).mean(dim=(1, 2, 3))
    return 10.0 * torch.log10(255.0 * 255.0 / mse)


def _gaussian_1d(device: torch.device) -> Tensor:
    # cv2.getGaussianKernel is what BasicSR uses: take the very same float64 numbers.
    return torch.from_numpy(cv2.getGaussianKernel(11, 1.5)).to(device=device, dtype=torch.float64).flatten()


def ssim_per_image(
    img: Tensor, img2: Tensor, crop_border: int = 0, y_channel: bool = False, float_input: bool = False
) -> Tensor:
    """Per-image SSIM (float64, shape N) of uint8 images: BasicSR's `calculate_ssim`, batched.

    Valid-region filtering (no padding) equals BasicSR's `cv2.filter2D(...)[5:-5, 5:-5]`; the SSIM map is
    averaged per channel, then over channels. BasicSR's 11x11 window is the outer product of a 1-D
    Gaussian, so we filter separably (vertically, then horizontally): same result to ~1e-13; float64 2-D
    convolution is slow on CPU.
    """
    a, b = _prepare(img, img2, crop_border, y_channel, float_input)
    n, c, h, w = a.shape
    if h < 11 or w < 11:
        raise ValueError(f"SSIM needs images of at least 11x11 after cropping, got {h}x{w}")
    g = _gaussian_1d(a.device)
    # all five filtered quantities in one batched call: (5 * N * C) x 1 x H x W
    stack = torch.stack([a, b, a * a, b * b, a * b]).reshape(5 * n * c, 1, h, w)
    filtered = F.conv2d(F.conv2d(stack, g.view(1, 1, 11, 1)), g.view(1, 1, 1, 11))
    mu1, mu2, a2, b2, ab = filtered.reshape(5, n * c, h - 10, w - 10)
    mu1_sq, mu2_sq, mu1_mu2 = mu1**2, mu2**2, mu1 * mu2
    sigma1_sq, sigma2_sq, sigma12 = a2 - mu1_sq, b2 - mu2_sq, ab - mu1_mu2
    ssim_map = ((2 * mu1_mu2 + _SSIM_C1) * (2 * sigma12 + _SSIM_C2)) / (
        (mu1_sq + mu2_sq + _SSIM_C1) * (sigma1_sq + sigma2_sq + _SSIM_C2)
    )
    return ssim_map.mean(dim=(1, 2)).view(n, c).mean(dim=1)


class _PerImageMean(Metric):
    """Mean over images of a per-image score of quantised images; float64 sum/count states."""

    full_state_update = False
    is_differentiable = False

    def __init__(
        self,
        value_range: Sequence[float] = (-1.0, 1.0),
        crop_border: int = 0,
        y_channel: bool = False,
        protocol: str = "basicsr",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
        self.value_range = checked_value_range(value_range)
        self.crop_border = int(crop_border)
        self.y_channel = bool(y_channel)
        self.protocol = protocol
        self.add_state("sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def _per_image(self, preds_u8: Tensor, target_u8: Tensor) -> Tensor:
        raise NotImplementedError

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add a batch of N x 3 x H x W images in `value_range` (default [-1, 1])."""
        if preds.shape != target.shape:
            raise ValueError(f"preds and target shapes differ: {tuple(preds.shape)} vs {tuple(target.shape)}")
        preds_u8, target_u8 = to_uint8(preds, self.value_range), to_uint8(target, self.value_range)
        scored = correct_mean_var(preds_u8, target_u8) if self.protocol == "vqfr" else preds_u8
        values = self._per_image(scored, target_u8)
        self.last_values = values.detach()  # per-image values of this batch (per-image CSVs, W&B tables)
        self.sum += values.sum()
        self.count += values.numel()

    def compute(self) -> Tensor:
        return self.sum / self.count


class PSNR(_PerImageMean):
    """Mean per-image PSNR (dB), BasicSR protocol; each value capped at `max_psnr` (None: no cap).

    The `identical` state counts pairs that quantise to the same uint8 image (infinite PSNR).
    """

    higher_is_better = True

    def __init__(self, max_psnr: float | None = 100.0, **kwargs: Any) -> None:
        """`kwargs`: value_range, crop_border, y_channel, protocol (as every per-image mean) and Metric's."""
        super().__init__(**kwargs)
        self.max_psnr = None if max_psnr is None else float(max_psnr)
        self.add_state("identical", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def _per_image(self, preds_u8: Tensor, target_u8: Tensor) -> Tensor:
        values = psnr_per_image(preds_u8, target_u8, self.crop_border, self.y_channel, self.protocol == "vqfr")
        self.identical += torch.isinf(values).sum()
        return values if self.max_psnr is None else values.clamp(max=self.max_psnr)


class SSIM(_PerImageMean):
    """Mean per-image SSIM, BasicSR protocol (Gaussian 11x11 window, sigma 1.5, valid region, per channel)."""

    higher_is_better = True

    def _per_image(self, preds_u8: Tensor, target_u8: Tensor) -> Tensor:
        return ssim_per_image(preds_u8, target_u8, self.crop_border, self.y_channel, self.protocol == "vqfr")
