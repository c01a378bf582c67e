"""RRDBNet as Real-ESRGAN releases it (`RealESRGAN_x4plus.pth`, `RealESRGAN_x2plus.pth`): the background
upsampler of `restore mode=photos` (`faces.background=realesrgan_x2plus`).

Written here with the module names of the released files (BasicSR's `conv_first`, `body.<i>.rdb<j>.conv<k>`,
`conv_body`, `conv_up1/2`, `conv_hr`, `conv_last`), so they load strictly through the restoration-network
registry like every other network; spandrel's independent ESRGAN port (which renames the keys) is the reference
the tests compare the outputs with. Architecture: residual-in-residual dense blocks (5 convolutions with dense
connections, residuals scaled by 0.2), two nearest x2 upsamplings; the x2 (x1) model first folds each 2x2 (4x4)
pixel block into channels (pixel unshuffle), so every release ends with the same x4 tail.

Forward, as every registry network: (B, 3, H, W) RGB in [-1, 1] -> (B, 3, H*scale, W*scale) in [-1, 1]. Inside,
the network sees RGB in [0, 1] and its output is clamped to [0, 1], as Real-ESRGAN's inference script does;
sides that the unshuffle cannot split are reflect-padded first and the padding cropped from the output.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

UNSHUFFLE = {4: 1, 2: 2, 1: 4}  # output scale -> pixel-unshuffle factor of the input


def _lrelu(x: Tensor) -> Tensor:
    return F.leaky_relu(x, 0.2)


class DenseBlock(nn.Module):
    """Five 3x3 convolutions, each fed the block input and every earlier output; residual scaled by 0.2."""

    def __init__(self, channels: int, growth: int) -> None:
        super().__init__()
        for k in range(1, 5):
            setattr(self, f"conv{k}", nn.Conv2d(channels + (k - 1) * growth, growth, 3, padding=1))
        self.conv5 = nn.Conv2d(channels + 4 * growth, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        features = [x]
        for k in range(1, 5):
            features.append(_lrelu(getattr(self, f"conv{k}")(torch.cat(features, 1))))
        return x + 0.2 * self.conv5(torch.cat(features, 1))


class RRDB(nn.Module):
    """Three dense blocks in a row around a residual scaled by 0.2."""

    def __init__(self, channels: int, growth: int) -> None:
        super().__init__()
        self.rdb1, self.rdb2, self.rdb3 = (DenseBlock(channels, growth) for _ in range(3))

    def forward(self, x: Tensor) -> Tensor:
        return x + 0.2 * self.rdb3(self.rdb2(self.rdb1(x)))


class RRDBNet(nn.Module):
    """Real-ESRGAN's generator; defaults are the released x4plus/x2plus ones (64 features, 23 blocks, growth 32)."""

    def __init__(self, *, scale: int = 4, num_feat: int = 64, num_block: int = 23, num_grow_ch: int = 32) -> None:
        super().__init__()
        if scale not in UNSHUFFLE:
            raise ValueError(f"RRDBNet scale must be one of {sorted(UNSHUFFLE)}, got {scale}")
        self.scale = scale
        self.size = None  # any input size: an upsampler, not a face network of one native size
        self.unshuffle = UNSHUFFLE[scale]
        self.conv_first = nn.Conv2d(3 * self.unshuffle**2, num_feat, 3, padding=1)
        self.body = nn.Sequential(*(RRDB(num_feat, num_grow_ch) for _ in range(num_block)))
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, padding=1)
        self.conv_up1 = nn.Conv2d(num_feat, num_feat, 3, padding=1)
        self.conv_up2 = nn.Conv2d(num_feat, num_feat, 3, padding=1)
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, padding=1)
        self.conv_last = nn.Conv2d(num_feat, 3, 3, padding=1)

    def upsample01(self, x: Tensor) -> Tensor:
        """The released network's own call: RGB in [0, 1] (sides divisible by the unshuffle factor) -> x scale."""
        feat = F.pixel_unshuffle(x, self.unshuffle) if self.unshuffle > 1 else x
        feat = self.conv_first(feat)
        feat = feat + self.conv_body(self.body(feat))
        feat = _lrelu(self.conv_up1(F.interpolate(feat, scale_factor=2, mode="nearest")))
        feat = _lrelu(self.conv_up2(F.interpolate(feat, scale_factor=2, mode="nearest")))
        return self.conv_last(_lrelu(self.conv_hr(feat)))

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        pad_h, pad_w = (-h) % self.unshuffle, (-w) % self.unshuffle
        x01 = (x + 1) / 2
        if pad_h or pad_w:
            x01 = F.pad(x01, (0, pad_w, 0, pad_h), mode="reflect")
        out = self.upsample01(x01)[..., : h * self.scale, : w * self.scale]
        return out.clamp(0, 1) * 2 - 1


def rrdbnet_file_options(state_dict: dict[str, Tensor]) -> dict[str, int]:
    """The configuration a released (or any BasicSR-layout) RRDBNet file fixes by its shapes: features, blocks,
    growth and, from the input channels of `conv_first`, the scale (12 channels: the x2 model's unshuffle)."""
    first = state_dict["conv_first.weight"]
    blocks = {int(key.split(".")[1]) for key in state_dict if key.startswith("body.")}
    by_unshuffle = {factor: scale for scale, factor in UNSHUFFLE.items()}
    factor = round((first.shape[1] / 3) ** 0.5)
    if factor not in by_unshuffle:
        raise ValueError(f"conv_first takes {first.shape[1]} channels: not an RGB RRDBNet of scale 1, 2 or 4")
    return {
        "scale": by_unshuffle[factor],
        "num_feat": int(first.shape[0]),
        "num_block": len(blocks),
        "num_grow_ch": int(state_dict["body.0.rdb1.conv1.weight"].shape[0]),
    }
