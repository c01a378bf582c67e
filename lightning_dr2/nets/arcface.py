"""resnet_face18 (arcface-pytorch, use_se=False): the face-recognition network behind the identity metric.

VQFR, GFPGAN and the blind-face-restoration papers that DR2 compares with measure identity preservation
("Deg") with this network and its published weights `resnet18_110.pth`: grayscale 128x128 faces in
[-1, 1] -> 512-d embedding, then the angle between the embeddings of the restored and the ground-truth
face. The module names below reproduce the original ones exactly so that file loads strictly.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn

from lightning_dr2.image_io import checked_value_range
from lightning_dr2.nets.loading import load_into, read_state_dict

__all__ = ["GRAY_MODES", "IRBlock", "ResNetFace18", "arcface_input_from_gray", "arcface_preprocess", "load_arcface"]

INPUT_SIZE = 128
EMBEDDING_DIM = 512

# 8-bit RGB -> gray in 15-bit fixed point: (R, G, B) weights, rounding offset. 0.299 R + 0.587 G + 0.114 B.
GRAY_MODES: dict[str, tuple[tuple[int, int, int], int]] = {
    # cv2.imread(path, IMREAD_GRAYSCALE) of an RGB PNG (what VQFR's calculate_cos_dist.py does): OpenCV asks
    # libpng for png_set_rgb_to_gray(0.299, 0.587); libpng truncates its 15-bit coefficients and the sum.
    "imread": ((9797, 19234, 3737), 0),
    # cv2.cvtColor(img, COLOR_BGR2GRAY) on uint8 (OpenCV 4.x/5.x): 15-bit coefficients, rounded sum.
    "cvtcolor": ((9798, 19235, 3735), 1 << 14),
}
_GRAY_SHIFT = 15
# cv2.resize INTER_LINEAR on uint8 works in fixed point with 11-bit interpolation coefficients.
_RESIZE_COEF_SCALE = 2048


def _conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False)


class IRBlock(nn.Module):
    """The "improved residual" block of arcface-pytorch: BN first, one PReLU shared by both activations.

    The stride and the channel change happen in the second conv; the shortcut gets a 1x1 conv + BN when
    either changes.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__()
        self.bn0 = nn.BatchNorm2d(in_ch)
        self.conv1 = _conv3x3(in_ch, in_ch)
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.prelu = nn.PReLU()
        self.conv2 = _conv3x3(in_ch, out_ch, stride)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.downsample: nn.Sequential | None = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_ch),
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.prelu(self.bn1(self.conv1(self.bn0(x))))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.prelu(out + shortcut)


class ResNetFace18(nn.Module):
    """resnet_face18(use_se=False): (B, 1, 128, 128) grayscale in [-1, 1] -> (B, 512) embedding.

    Stem conv/BN/PReLU + 2x2 max-pool (128 -> 64), four stages of two IRBlocks (64, 128, 256, 512 channels;
    the last three halve the resolution, 64 -> 8), then BN, dropout, a linear layer on the flattened 8x8x512
    map and a BatchNorm1d. The 128x128 input size is fixed by that linear layer.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 64, kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.prelu = nn.PReLU()
        self.maxpool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.layer1 = self._stage(64, 64, stride=1)
        self.layer2 = self._stage(64, 128, stride=2)
        self.layer3 = self._stage(128, 256, stride=2)
        self.layer4 = self._stage(256, 512, stride=2)
        self.bn4 = nn.BatchNorm2d(512)
        self.dropout = nn.Dropout()
        self.fc5 = nn.Linear(512 * 8 * 8, EMBEDDING_DIM)
        self.bn5 = nn.BatchNorm1d(EMBEDDING_DIM)
        self._init_weights()

    @staticmethod
    def _stage(in_ch: int, out_ch: int, stride: int) -> nn.Sequential:
        return nn.Sequential(IRBlock(in_ch, out_ch, stride), IRBlock(out_ch, out_ch))

    def _init_weights(self) -> None:
        # The original's init (only matters for training from scratch; the metric loads weights).
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_normal_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1:] != (1, INPUT_SIZE, INPUT_SIZE):
            raise ValueError(
                f"ResNetFace18 expects (B, 1, {INPUT_SIZE}, {INPUT_SIZE}) grayscale faces in [-1, 1] "
                f"(see arcface_preprocess), got {tuple(x.shape)}"
            )
        x = self.maxpool(self.prelu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.dropout(self.bn4(x))
        return self.bn5(self.fc5(x.flatten(1)))


def load_arcface(path: str | Path) -> ResNetFace18:
    """ResNetFace18 with the weights in `path` (`resnet18_110.pth`, `module.` prefixes or not), frozen.

    It is a measuring instrument: eval mode (BN running stats, no dropout) and no gradients.
    """
    model = ResNetFace18()
    load_into(model, read_state_dict(path), source=path)
    model.eval()
    model.requires_grad_(False)
    return model


def arcface_preprocess(
    images: Tensor, *, value_range: tuple[float, float], gray: Literal["imread", "cvtcolor"] = "imread"
) -> Tensor:
    """RGB images (B, 3, H, W) in `value_range` -> (B, 1, 128, 128) network input, the VQFR protocol.

    VQFR's `calculate_cos_dist.py` (used by the BFR papers DR2 compares with) reads each 8-bit PNG with
    `cv2.imread(path, 0)`, resizes it with `cv2.resize(img, (128, 128), INTER_LINEAR)` and maps it to
    [-1, 1] with (x - 127.5) / 127.5. We reproduce every step on tensors, bit-exactly, so the metric runs on
    the GPU during training and gives the numbers the scripts give on saved PNGs:
    clamp + round to uint8 levels (as images are saved), integer RGB -> gray (`gray="imread"`: libpng's
    truncating conversion that `cv2.imread(path, 0)` applies to RGB PNGs; `gray="cvtcolor"`:
    `cv2.cvtColor(..., COLOR_BGR2GRAY)`, which rounds; they differ by one gray level on about half of the
    pixels), then OpenCV's fixed-point bilinear resize (half-pixel centres, no antialiasing).

    `value_range` is required: (-1, 1) or (0, 1) for float images, (0, 255) for uint8 ones; guessing it
    would silently skew the metric.
    """
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"arcface_preprocess expects RGB images (B, 3, H, W), got {tuple(images.shape)}")
    if gray not in GRAY_MODES:
        raise ValueError(f"arcface_preprocess: gray must be one of {sorted(GRAY_MODES)}, got {gray!r}")
    low, high = checked_value_range(value_range)
    x = images.detach().to(torch.float32)
    if not torch.isfinite(x).all():
        raise ValueError("arcface_preprocess: images contain NaN or inf; the identity distance would be meaningless")
    levels = ((x.clamp(low, high) - low) / (high - low) * 255.0).round().to(torch.int32)
    (coef_r, coef_g, coef_b), offset = GRAY_MODES[gray]
    r, g, b = levels.unbind(dim=1)
    return arcface_input_from_gray((r * coef_r + g * coef_g + b * coef_b + offset) >> _GRAY_SHIFT)


def arcface_input_from_gray(gray_levels: Tensor) -> Tensor:
    """8-bit gray levels (B, H, W), integer dtype -> (B, 1, 128, 128) network input: the script's
    `cv2.resize` to 128x128 and (x - 127.5) / 127.5. Used directly for gray decoded from a file (JPEG)."""
    if gray_levels.dim() != 3 or gray_levels.dtype.is_floating_point:
        raise ValueError(f"expected integer gray levels (B, H, W), got {gray_levels.dtype} {tuple(gray_levels.shape)}")
    resized = _cv2_resize_linear_u8(gray_levels.to(torch.int32), INPUT_SIZE, INPUT_SIZE)
    return (resized.to(torch.float32).unsqueeze(1) - 127.5) / 127.5


def _cv2_resize_linear_u8(img: Tensor, out_h: int, out_w: int) -> Tensor:
    """`cv2.resize(img, (out_w, out_h), interpolation=INTER_LINEAR)` for uint8 levels held in int32 (B, H, W).

    OpenCV filters rows with 11-bit coefficients into an int buffer, then combines two buffered rows with
    its SIMD rounding: ((S0 >> 4) * b0 >> 16) + ((S1 >> 4) * b1 >> 16) + 2 >> 2. Two gathers per axis, all
    integer arithmetic: bit-exact with cv2 (x86 build; checked by the tests), on any device.
    """
    in_h, in_w = img.shape[-2:]
    x0, x1, wx0, wx1 = (t.to(img.device) for t in _cv2_linear_taps(in_w, out_w, clamp_weights=True))
    y0, y1, wy0, wy1 = (t.to(img.device) for t in _cv2_linear_taps(in_h, out_h, clamp_weights=False))
    rows = img.index_select(-1, x0) * wx0 + img.index_select(-1, x1) * wx1  # (B, H, out_w), scale 2**11
    s0 = rows.index_select(-2, y0) >> 4
    s1 = rows.index_select(-2, y1) >> 4
    out = (((s0 * wy0[:, None]) >> 16) + ((s1 * wy1[:, None]) >> 16) + 2) >> 2
    return out.clamp(0, 255)


@functools.lru_cache(maxsize=32)
def _cv2_linear_taps(in_len: int, out_len: int, clamp_weights: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Source indices and 11-bit weights of OpenCV's INTER_LINEAR along one axis.

    Positions in float64 rounded to float32, fractions and 1 - fraction in float32, weights rounded half to
    even: OpenCV's arithmetic. Horizontally OpenCV moves taps that fall off the image onto the edge pixel
    with weight 1 (`clamp_weights`); vertically it keeps the fractional weights and clamps only the row
    indices. Both interpolate the same, but they round differently.
    """
    scale = 1.0 / (out_len / in_len)
    pos = ((torch.arange(out_len, dtype=torch.float64) + 0.5) * scale - 0.5).to(torch.float32)
    src = torch.floor(pos)
    frac = pos - src
    src = src.long()
    if clamp_weights:
        off = (src < 0) | (src >= in_len - 1)
        frac = torch.where(off, torch.zeros_like(frac), frac)
        src = src.clamp(0, in_len - 1)
    w0 = torch.round((1.0 - frac) * _RESIZE_COEF_SCALE).to(torch.int32)
    w1 = torch.round(frac * _RESIZE_COEF_SCALE).to(torch.int32)
    return src.clamp(0, in_len - 1), (src + 1).clamp(0, in_len - 1), w0, w1
