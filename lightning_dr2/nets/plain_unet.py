"""A plain U-Net enhancer: the non-SPARNet backbone of the generator registry.

Encoder of stride-2 conv blocks, decoder of nearest-upsample conv blocks with skip concatenations,
InstanceNorm + LeakyReLU, and a global residual (the network predicts a correction of its input), so a
freshly initialised net starts near the identity. No attention: the baseline to compare SPARNet with.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812


def _block(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, padding_mode="reflect", bias=False),
        nn.InstanceNorm2d(c_out, affine=True),
        nn.LeakyReLU(0.2),
        nn.Conv2d(c_out, c_out, 3, padding=1, padding_mode="reflect", bias=False),
        nn.InstanceNorm2d(c_out, affine=True),
        nn.LeakyReLU(0.2),
    )


class PlainUNet(nn.Module):
    """(B, 3, size, size) in [-1, 1] -> same shape; `depth` halvings, widths base_ch * 2**i capped at max_ch."""

    def __init__(self, size: int = 512, base_ch: int = 32, max_ch: int = 256, depth: int = 4) -> None:
        super().__init__()
        if depth < 1 or size % 2**depth:
            raise ValueError(f"PlainUNet: size {size} must be divisible by 2**depth (depth={depth} >= 1)")
        self.size = size
        self.config: dict[str, Any] = dict(size=size, base_ch=base_ch, max_ch=max_ch, depth=depth)
        widths = [min(base_ch * 2**i, max_ch) for i in range(depth + 1)]
        self.stem = _block(3, widths[0])
        self.down = nn.ModuleList(_block(widths[i], widths[i + 1], stride=2) for i in range(depth))
        self.up = nn.ModuleList(_block(widths[i + 1] + widths[i], widths[i]) for i in reversed(range(depth)))
        self.out_conv = nn.Conv2d(widths[0], 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3 or tuple(x.shape[-2:]) != (self.size, self.size):
            raise ValueError(f"PlainUNet expects (B, 3, {self.size}, {self.size}), got {tuple(x.shape)}")
        skips = [self.stem(x)]
        for block in self.down:
            skips.append(block(skips[-1]))
        h = skips.pop()
        for block in self.up:
            h = block(torch.cat([F.interpolate(h, scale_factor=2, mode="nearest"), skips.pop()], dim=1))
        return x + self.out_conv(h)
