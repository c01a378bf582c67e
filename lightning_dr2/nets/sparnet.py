"""SPARNet / SPARNetHD: the face enhancement generator DR2 puts after its degradation remover.

A residual encoder / bottleneck / decoder in which every residual block re-weights its features with a
spatial attention mask predicted by a small hourglass ("Learning Spatial Attention for Face
Super-Resolution", Chen et al.). Written from the paper and from the key names and shapes of the
published checkpoints (`SPARNetHD_FFHQ_DR2aug.pth`, `SPARNetHD_V4_Attn2D_net_H-epoch10.pth`), so that
those state dicts load with `strict=True`. Every Conv2d carries legacy `torch.nn.utils.spectral_norm`
(keys `weight_orig`, `weight_u`, `weight_v`) like the releases; `fold_spectral_norm` bakes it into plain
weights for inference.

Layout (names are the state-dict prefixes):
- `encoder.0`: 3x3 conv 3 -> c0; `encoder.1..D`: residual blocks, each halving the resolution;
- `res_layers.*`: residual blocks at `min_feat_size`;
- `decoder.0..D-1`: residual blocks, each doubling the resolution; `out_conv`: 3x3 conv -> 3 (no tanh).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.utils.spectral_norm import SpectralNorm

from lightning_dr2.nets.loading import load_into, read_state_dict

__all__ = ["NORM_TYPES", "ATT_NAMES", "HD_CONFIG", "SPARNet", "fold_spectral_norm", "load_sparnet"]

NORM_TYPES = ("in", "bn", "none")
# spar: one mask channel shared by all feature channels (2D attention, the released SPARNetHD);
# spar3d: one mask per feature channel (the paper's 3D attention); none: plain residual blocks.
ATT_NAMES = ("spar", "spar3d", "none")

# The released 512x512 SPARNetHD (85,793,412 parameters).
HD_CONFIG: dict[str, Any] = dict(
    size=512,
    min_ch=32,
    max_ch=512,
    min_feat_size=32,
    res_depth=10,
    norm_type="in",
    att_name="spar",
    bottleneck_size=4,
    spectral_norm=True,
)

_LEAKY_SLOPE = 0.2
_ATT_CH = 64  # width of every attention hourglass, whatever the block width
# The first encoder block's hourglass has depth log2(_ATT_TOP_RES / bottleneck_size); each block down
# the encoder has one level less and each block up the decoder one more (so the hourglass bottom stays
# at a similar resolution). The releases fix this reference at 64 whatever the image size.
_ATT_TOP_RES = 64


def _act() -> nn.Module:
    return nn.LeakyReLU(_LEAKY_SLOPE)


class NormLayer(nn.Module):
    """Feature normalisation; a wrapper so the checkpoints' `<...>.norm.norm.weight` names line up."""

    def __init__(self, channels: int, norm_type: str) -> None:
        super().__init__()
        if norm_type == "in":
            self.norm: nn.Module = nn.InstanceNorm2d(channels, affine=True)
        elif norm_type == "bn":
            self.norm = nn.BatchNorm2d(channels)
        elif norm_type == "none":
            self.norm = nn.Identity()
        else:
            raise ValueError(f"norm_type must be one of {NORM_TYPES}, got {norm_type!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)


class ConvLayer(nn.Module):
    """Reflection-padded 3x3 conv, optional norm and LeakyReLU.

    `scale="down"` uses stride 2, `scale="up"` a nearest x2 upsampling before the conv. The conv has a
    bias only when no norm follows it (a norm would cancel it), as in the checkpoints.
    """

    def __init__(self, c_in: int, c_out: int, scale: str = "none", norm_type: str = "none", act: bool = False) -> None:
        super().__init__()
        self.upsample = scale == "up"
        self.pad = nn.ReflectionPad2d(1)
        self.conv2d = nn.Conv2d(c_in, c_out, 3, stride=2 if scale == "down" else 1, bias=norm_type == "none")
        self.norm = NormLayer(c_out, norm_type)
        self.act = _act() if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.upsample:
            x = nn.functional.interpolate(x, scale_factor=2, mode="nearest")
        return self.act(self.norm(self.conv2d(self.pad(x))))


class HourglassAttention(nn.Module):
    """Spatial attention: an hourglass over the features predicts a sigmoid mask that multiplies them.

    Level L has `b1_L` (skip branch at the current resolution), `b2_L` (stride-2 conv down), the next
    level (or `b2_plus_1` at the bottom) and `b3_L` (upsample + conv); the two branches are summed.
    """

    def __init__(self, depth: int, channels: int, att_channels: int, norm_type: str) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"hourglass depth must be >= 1, got {depth}")
        self.depth = depth
        self._build(depth, channels, norm_type)
        self.out_block = nn.Sequential(ConvLayer(_ATT_CH, att_channels), nn.Sigmoid())

    def _build(self, level: int, c_in: int, norm_type: str) -> None:
        # Registration order = the checkpoints' key order: b1_L, b2_L, <deeper levels>, b3_L.
        self.add_module(f"b1_{level}", ConvLayer(c_in, _ATT_CH, "none", norm_type, act=True))
        self.add_module(f"b2_{level}", ConvLayer(c_in, _ATT_CH, "down", norm_type, act=True))
        if level > 1:
            self._build(level - 1, _ATT_CH, norm_type)
        else:
            self.add_module("b2_plus_1", ConvLayer(_ATT_CH, _ATT_CH, "none", norm_type, act=True))
        self.add_module(f"b3_{level}", ConvLayer(_ATT_CH, _ATT_CH, "up", norm_type, act=True))

    def _hourglass(self, level: int, x: torch.Tensor) -> torch.Tensor:
        skip = getattr(self, f"b1_{level}")(x)
        low = getattr(self, f"b2_{level}")(x)
        low = self._hourglass(level - 1, low) if level > 1 else self.b2_plus_1(low)
        return skip + getattr(self, f"b3_{level}")(low)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.out_block(self._hourglass(self.depth, x))


class ResidualBlock(nn.Module):
    """Pre-activation residual block with attention on the residual branch.

    out = shortcut(x) + att(conv2(conv1(act(norm(x))))); the shortcut is a conv (with the same
    rescaling) when the resolution or width changes, else the identity.
    """

    def __init__(self, c_in: int, c_out: int, scale: str, norm_type: str, att_name: str, att_depth: int) -> None:
        super().__init__()
        if scale == "none" and c_in == c_out:
            self.shortcut_func: nn.Module = nn.Identity()
        else:
            self.shortcut_func = ConvLayer(c_in, c_out, scale)
        self.preact_func = nn.Sequential(NormLayer(c_in, norm_type), _act())
        # Upsample before the first conv, downsample in the second: the block works at the larger size.
        self.conv1 = ConvLayer(c_in, c_out, "up" if scale == "up" else "none", norm_type, act=True)
        self.conv2 = ConvLayer(c_out, c_out, "down" if scale == "down" else "none", norm_type, act=False)
        if att_name == "none" or att_depth < 1:
            self.att_func: nn.Module = nn.Identity()
        else:
            att_channels = 1 if att_name == "spar" else c_out
            self.att_func = HourglassAttention(att_depth, c_out, att_channels, norm_type)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.conv2(self.conv1(self.preact_func(x)))
        return self.shortcut_func(x) + self.att_func(residual)


class SPARNet(nn.Module):
    """SPARNet generator: a (B, 3, size, size) image in [-1, 1] to the restored image, same size.

    Widths: c0 = max_ch // (D + 1) clipped to [min_ch, max_ch]; the encoder goes from c0 to c0 * 2**D,
    each level clipped to [min_ch, max_ch] again (Face-SPARNet's rule), with D = log2(size / min_feat_size)
    downsampling blocks; the decoder mirrors it. `res_depth` counts like the releases: there are
    `res_depth + 3 - D` blocks at `min_feat_size` (9 for SPARNetHD).
    `bottleneck_size` sets the attention hourglass depth (see `_ATT_TOP_RES`). The output is not
    squashed (no tanh), as in the releases: clamp it to [-1, 1] when saving images.
    `residual=True` (ours, not in the releases): output = input + gain * network(input), the gain a learned
    scalar starting at 0, so a short training run starts from the identity instead of a random image.
    """

    def __init__(
        self,
        size: int = 512,
        min_ch: int = 32,
        max_ch: int = 512,
        min_feat_size: int = 32,
        res_depth: int = 10,
        norm_type: str = "in",
        att_name: str = "spar",
        bottleneck_size: int = 4,
        spectral_norm: bool = True,
        residual: bool = False,
    ) -> None:
        super().__init__()
        if norm_type not in NORM_TYPES:
            raise ValueError(f"norm_type must be one of {NORM_TYPES}, got {norm_type!r}")
        if att_name not in ATT_NAMES:
            raise ValueError(f"att_name must be one of {ATT_NAMES}, got {att_name!r}")
        if not 0 < min_ch <= max_ch:
            raise ValueError(f"need 0 < min_ch <= max_ch, got min_ch={min_ch}, max_ch={max_ch}")
        if min_feat_size < 2 or size < min_feat_size or not _is_pow2(size // min_feat_size) or size % min_feat_size:
            raise ValueError(
                f"size must be min_feat_size * 2**k with min_feat_size >= 2, got size={size}, "
                f"min_feat_size={min_feat_size}"
            )
        if bottleneck_size < 1 or not _is_pow2(bottleneck_size) or bottleneck_size > _ATT_TOP_RES:
            raise ValueError(f"bottleneck_size must be a power of two in [1, {_ATT_TOP_RES}], got {bottleneck_size}")
        self.config: dict[str, Any] = dict(
            size=size,
            min_ch=min_ch,
            max_ch=max_ch,
            min_feat_size=min_feat_size,
            res_depth=res_depth,
            norm_type=norm_type,
            att_name=att_name,
            bottleneck_size=bottleneck_size,
            spectral_norm=spectral_norm,
            **({"residual": True} if residual else {}),  # recorded only when on: released configs stay as they are
        )
        self.size = size
        self.residual = residual

        steps = int(math.log2(size // min_feat_size))
        n_res = max(0, res_depth + 3 - steps)
        # Face-SPARNet clips the starting width, then keeps doubling from the clipped value (clipping each
        # level's width again); clipping only base * 2**i would differ whenever max_ch // (steps + 1) < min_ch.
        base = _clip(max_ch // (steps + 1), min_ch, max_ch)
        widths = [_clip(base * 2**i, min_ch, max_ch) for i in range(steps + 1)]
        # Per block: (state-dict name, c_in, c_out, scale, output resolution, hourglass depth).
        top = int(math.log2(_ATT_TOP_RES // bottleneck_size))
        mid = top - steps + 1
        down = [(f"encoder.{i + 1}", widths[i], widths[i + 1], "down", size >> (i + 1), top - i) for i in range(steps)]
        same = [(f"res_layers.{i}", widths[-1], widths[-1], "none", min_feat_size, mid) for i in range(n_res)]
        up = [
            (
                f"decoder.{i}",
                widths[steps - i],
                widths[steps - i - 1],
                "up",
                min_feat_size << (i + 1),
                mid + 1 + i,
            )
            for i in range(steps)
        ]
        if att_name != "none":
            for name, _, _, _, res, depth in down + same + up:
                if depth >= 1 and res % 2 ** (depth + 1):
                    raise ValueError(
                        f"{name} works at {res}x{res}, too small for an attention hourglass of depth "
                        f"{depth} (needs a multiple of {2 ** (depth + 1)}); increase size or bottleneck_size"
                    )

        def blocks(specs: list[tuple]) -> list[ResidualBlock]:
            return [
                ResidualBlock(c_in, c_out, scale, norm_type, att_name, depth)
                for _, c_in, c_out, scale, _, depth in specs
            ]

        self.encoder = nn.Sequential(ConvLayer(3, widths[0]), *blocks(down))
        self.res_layers = nn.Sequential(*blocks(same))
        self.decoder = nn.Sequential(*blocks(up))
        self.out_conv = ConvLayer(widths[0], 3)

        if spectral_norm:
            for module in self.modules():
                if isinstance(module, nn.Conv2d):
                    nn.utils.spectral_norm(module)
        if residual:
            # ReZero-style gain, zero at init: the network starts as the identity on its input and learns a
            # correction (spectral norm rules out zero-initialising `out_conv` instead). Its one extra key,
            # `residual_gain`, exists only with residual=True: the released layout is unchanged.
            self.residual_gain = nn.Parameter(torch.zeros(()))

    @classmethod
    def hd(cls, **overrides: Any) -> SPARNet:
        """The released 512x512 SPARNetHD (what DR2 uses); `overrides` change single config values."""
        return cls(**{**HD_CONFIG, **overrides})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[2] != self.size or x.shape[3] != self.size:
            raise ValueError(
                f"SPARNet expects images of shape (B, 3, {self.size}, {self.size}) in [-1, 1], "
                f"got {tuple(x.shape)}; resize the input to {self.size}x{self.size} first"
            )
        out = self.out_conv(self.decoder(self.res_layers(self.encoder(x))))
        return x + self.residual_gain * out if self.residual else out


def _clip(width: int, min_ch: int, max_ch: int) -> int:
    return max(min_ch, min(width, max_ch))


def _is_pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def fold_spectral_norm(model: nn.Module) -> nn.Module:
    """Replace every spectral-normalised weight by weight_orig / sigma, in place, and drop the hooks.

    sigma comes from the stored u, v without a power iteration, which is what eval mode computes, so
    eval outputs are unchanged while each forward skips the normalisation. The weights become plain
    `weight` parameters (state dict loadable by `SPARNet(..., spectral_norm=False)`). For inference only:
    training afterwards would no longer be spectrally normalised. A no-op on a model without it.
    """
    for module in model.modules():
        names = [h.name for h in module._forward_pre_hooks.values() if isinstance(h, SpectralNorm)]
        for name in names:
            nn.utils.remove_spectral_norm(module, name)
    if isinstance(model, SPARNet):
        model.config["spectral_norm"] = False  # now the architecture of the plain-weight network
    return model


def load_sparnet(path: str | Path, spectral_norm: bool | None = None, **config: Any) -> SPARNet:
    """Build a SPARNet (default: SPARNetHD config) and load the weights at `path` strictly, in eval mode.

    A `module.` (DataParallel) prefix is stripped. `spectral_norm=None` follows the file: released
    checkpoints have `weight_orig/_u/_v`, folded exports plain `weight`. A file of another network
    raises `WeightsError` listing the missing and unexpected keys.
    """
    state_dict = read_state_dict(path)
    if spectral_norm is None:
        spectral_norm = any(key.endswith(".weight_orig") for key in state_dict)
    model = SPARNet(**{**HD_CONFIG, **config, "spectral_norm": spectral_norm})
    load_into(model, state_dict, path)
    return model.eval()
