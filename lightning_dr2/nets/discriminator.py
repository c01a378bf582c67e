"""Multi-scale PatchGAN discriminator of the SPARNetHD recipe, returning every layer's features.

Three copies of a 4-layer PatchGAN look at the image at full, half and quarter resolution; each returns
its intermediate feature maps (for the generator's feature-matching loss) and a patch score map (for
the hinge loss). InstanceNorm and spectral norm on every conv, as in the Face-SPARNet recipe. With the
defaults (base 64, max 512 channels, 4 layers, 3 scales) it has 11,750,403 parameters (DESIGN.md).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

_LEAKY_SLOPE = 0.2


class _DownLayer(nn.Module):
    """Reflection-padded 3x3 conv, 2x2 average pooling, norm, LeakyReLU: halves the resolution."""

    def __init__(self, c_in: int, c_out: int, norm: str) -> None:
        super().__init__()
        self.pad = nn.ReflectionPad2d(1)
        self.conv = nn.Conv2d(c_in, c_out, 3, bias=norm == "none")
        self.norm = nn.InstanceNorm2d(c_out, affine=True) if norm == "in" else nn.Identity()
        self.act = nn.LeakyReLU(_LEAKY_SLOPE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(F.avg_pool2d(self.conv(self.pad(x)), 2)))


class PatchDiscriminator(nn.Module):
    """One scale: a stem conv, `layers` downsampling layers, and a 3x3 conv to one score map."""

    def __init__(self, in_ch: int = 3, base_ch: int = 64, max_ch: int = 512, layers: int = 4, norm: str = "in") -> None:
        super().__init__()
        if norm not in ("in", "none"):
            raise ValueError(f"discriminator norm must be 'in' or 'none', got {norm!r}")
        if layers < 1:
            raise ValueError(f"discriminator layers must be >= 1, got {layers}")
        self.stem = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(in_ch, base_ch, 3), nn.LeakyReLU(_LEAKY_SLOPE))
        widths = [min(base_ch * 2**i, max_ch) for i in range(layers + 1)]
        self.body = nn.ModuleList(_DownLayer(widths[i], widths[i + 1], norm) for i in range(layers))
        self.score = nn.Conv2d(widths[-1], 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[stem features, each layer's features..., score map]."""
        feats = [self.stem(x)]
        for layer in self.body:
            feats.append(layer(feats[-1]))
        feats.append(self.score(feats[-1]))
        return feats


class MultiScaleDiscriminator(nn.Module):
    """`scales` PatchGANs on the image downsampled 2**s times; `forward` -> one feature list per scale.

    The last entry of each list is the score map; the others are the features feature matching compares.
    """

    def __init__(
        self,
        in_ch: int = 3,
        base_ch: int = 64,
        max_ch: int = 512,
        layers: int = 4,
        scales: int = 3,
        norm: str = "in",
        spectral_norm: bool = True,
    ) -> None:
        super().__init__()
        if scales < 1:
            raise ValueError(f"discriminator scales must be >= 1, got {scales}")
        self.discriminators = nn.ModuleList(
            PatchDiscriminator(in_ch, base_ch, max_ch, layers, norm) for _ in range(scales)
        )
        if spectral_norm:
            for module in self.modules():
                if isinstance(module, nn.Conv2d):
                    nn.utils.spectral_norm(module)
        self.min_size = 2 ** (scales - 1) * 2 ** (layers + 1)  # InstanceNorm needs > 1 pixel at the end

    def forward(self, x: torch.Tensor) -> list[list[torch.Tensor]]:
        if min(x.shape[-2:]) < self.min_size:
            raise ValueError(
                f"the discriminator needs images of at least {self.min_size} px a side for "
                f"{len(self.discriminators)} scales, got {tuple(x.shape[-2:])}; use fewer scales or layers"
            )
        out = []
        for i, disc in enumerate(self.discriminators):
            if i > 0:
                x = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
            out.append(disc(x))
        return out
