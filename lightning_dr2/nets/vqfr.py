"""VQFR v1 and v2: the vector-quantized face restorers of DR2's "DR2 + VQFR" rows.

Gu et al., "VQFR: Blind Face Restoration with Vector-Quantized Dictionary and Parallel Decoder" (ECCV 2022).
Written from the architecture of TencentARC/VQFR (Apache-2.0: `vqfr/archs/vqfrv1_arch.py`, `vqfrv2_arch.py`,
`vqganv1_arch.py`, `vqganv2_arch.py`, `quantizer_arch.py`) under the module names of its released files, so
`VQFR_v1-33a1fac5.pth` and `VQFR_v2.pth` load with `strict=True` (manifests: tests/fixtures/vqfr_v*_keys.json).
Inference only: the training parts (codebook losses, k-means re-estimation, usage counters) hold no weights.

Both versions: a VQGAN-style encoder, a codebook, a "texture" decoder from the codes, and a parallel "main"
decoder that warps the texture decoder's features towards the input at every level ("texture warping": a
modulated deformable convolution whose offsets and masks come from the texture features, a 3x3-conv feature
of the input image and the offsets of the level above).
- v1: the encoder output goes through a 1x1 conv to the nearest code (L2); the output is a 3x3 conv of the
  main decoder's features concatenated with the input image.
- v2: a LayerNorm + Linear head predicts each position's code (argmax); the output is the texture decoder's
  output conv applied to `texture + fidelity_ratio * main`. At the demo's default fidelity_ratio = 0 that is
  the texture decoder alone, so the main branch is not run (exactly the same result for finite features).
The output is not squashed, like the releases: the demo clamps it to [-1, 1] when it saves the image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import deform_conv2d

from lightning_dr2.nets.native_input import check_native_input

__all__ = ["V1_CONFIG", "V2_CONFIG", "Codebook", "VQFRConfig", "VQFRv1", "VQFRv2"]

_GROUPS = 32  # GroupNorm groups everywhere (VQGAN's normalisation)


@dataclass(frozen=True)
class VQFRConfig:
    """The architecture of a VQFR network (either version): level i works at size / 2**i with width
    base_channels * channel_multipliers[i]; the top level is quantized."""

    size: int
    base_channels: int
    channel_multipliers: tuple[int, ...]
    encoder_blocks: int  # ResBlocks per encoder level
    decoder_blocks: int  # ResBlocks per texture-decoder level
    cond_channels: int = 32  # width of the input-image feature that guides the warping
    deformable_groups: int = 4
    num_codes: int = 1024
    code_dim: int = 256

    def __post_init__(self) -> None:
        object.__setattr__(self, "channel_multipliers", tuple(int(m) for m in self.channel_multipliers))
        down = 2 ** (len(self.widths) - 1)
        if self.size % down:
            raise ValueError(f"size must be a multiple of {down} (2 ** (levels - 1)), got size={self.size}")
        if any(w % _GROUPS or w % self.deformable_groups for w in self.widths):
            raise ValueError(
                f"every level width (base_channels * multiplier) must be a multiple of {_GROUPS} (GroupNorm) and "
                f"of deformable_groups={self.deformable_groups}; got {self.widths}"
            )

    @property
    def widths(self) -> list[int]:
        return [self.base_channels * m for m in self.channel_multipliers]


# The released configurations (VQFR's options/test/VQFR/test_vqfr_v1.yml and test_vqfr_v2.yml), in our names.
V1_CONFIG = VQFRConfig(
    size=512, base_channels=128, channel_multipliers=(1, 1, 2, 2, 2, 4), encoder_blocks=2, decoder_blocks=3
)
V2_CONFIG = VQFRConfig(
    size=512, base_channels=64, channel_multipliers=(1, 2, 2, 4, 4, 8), encoder_blocks=2, decoder_blocks=2
)


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(_GROUPS, channels, eps=1e-6)


def _conv(cin: int, cout: int, kernel: int = 3, **kwargs: Any) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel, padding=kwargs.pop("padding", kernel // 2), **kwargs)


def _level(i: int) -> str:
    """The releases' name of the level at 1 / 2**i of the image size."""
    return f"Level_{2**i}"


def _bilinear(x: Tensor, size: tuple[int, int]) -> Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class ResBlock(nn.Module):
    """Two GroupNorm-SiLU-3x3 conv layers plus a skip; a 1x1 conv on the skip when the width changes, named
    as in the release (`shortcut_conv` in v1, `residual_func` in v2)."""

    def __init__(self, cin: int, cout: int, skip_name: str) -> None:
        super().__init__()
        self.norm1, self.conv1 = _norm(cin), _conv(cin, cout)
        self.norm2, self.conv2 = _norm(cout), _conv(cout, cout)
        self.skip_name = skip_name if cin != cout else None
        if self.skip_name is not None:
            self.add_module(self.skip_name, _conv(cin, cout, 1))

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv2(F.silu(self.norm2(self.conv1(F.silu(self.norm1(x))))))
        skip = x if self.skip_name is None else getattr(self, self.skip_name)(x)
        return skip + h


class SelfAttention(nn.Module):
    """Single-head self-attention over all positions, with a residual (VQGAN's attention block)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = _norm(channels)
        self.q, self.k, self.v, self.proj_out = (_conv(channels, channels, 1) for _ in range(4))

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        y = self.norm(x)
        q, k, v = (conv(y).flatten(2).transpose(1, 2) for conv in (self.q, self.k, self.v))  # (B, HW, C)
        out = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(C)) v
        return x + self.proj_out(out.transpose(1, 2).reshape(b, c, h, w))


class Resample(nn.Module):
    """v1's change of resolution by `factor`: bilinear resize and a 3x3 conv (conv first going up, last going
    down); factor 1 is the identity and has no weights."""

    def __init__(self, cin: int, cout: int, factor: int, direction: str) -> None:
        super().__init__()
        self.factor, self.up = factor, direction == "up"
        if factor != 1:
            self.conv = _conv(cin, cout)

    def forward(self, x: Tensor) -> Tensor:
        if self.factor == 1:
            return x
        h, w = x.shape[-2:]
        if self.up:
            return _bilinear(self.conv(x), (h * self.factor, w * self.factor))
        return self.conv(_bilinear(x, (h // self.factor, w // self.factor)))


class GuidedDeformConv(nn.Module):
    """3x3 modulated deformable convolution (DCNv2) of `x` whose offsets and masks a 3x3 conv (`conv_offset`)
    predicts from another feature (VQFR's DCNv2Pack). `conv_offset` gives 3 * groups * 9 channels: the first
    two thirds are the offsets in torchvision's (and the DCN CUDA kernels') layout, (dy, dx) interleaved per
    kernel tap and group; the last third the mask logits (sigmoid)."""

    def __init__(self, channels: int, deformable_groups: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(channels, channels, 3, 3))
        self.bias = nn.Parameter(torch.zeros(channels))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        self.conv_offset = _conv(channels, 3 * deformable_groups * 9)
        nn.init.zeros_(self.conv_offset.weight)  # zero offsets, masks 0.5: starts as a plain conv
        nn.init.zeros_(self.conv_offset.bias)

    def forward(self, x: Tensor, guide: Tensor) -> Tensor:
        out = self.conv_offset(guide)
        n_offsets = out.shape[1] * 2 // 3
        offset, mask = out[:, :n_offsets], torch.sigmoid(out[:, n_offsets:])
        return deform_conv2d(x, offset, self.weight, self.bias, padding=(1, 1), mask=mask)


class TextureWarping(nn.Module):
    """Warps texture features `x` towards the input: offset features from [input feature resized to x, x]
    (1x1, depthwise 7x7, 1x1 convs), joined below the top level with the upsampled offset features of the level
    above (3x3 conv), drive a GuidedDeformConv of x. Returns (warped x, offset features). v1 resizes the input
    feature with bilinear + 3x3 conv (`downsample`), v2 with bilinear alone."""

    def __init__(
        self, channels: int, cond_channels: int, scale: int, deformable_groups: int, previous: int, v1: bool
    ) -> None:
        super().__init__()
        self.scale = scale
        if v1:
            self.downsample = Resample(cond_channels, cond_channels, scale, "down")
        self.offset_conv1 = nn.Sequential(
            _conv(channels + cond_channels, channels, 1),
            _norm(channels),
            nn.SiLU(),
            _conv(channels, channels, 7, groups=channels),
            _norm(channels),
            nn.SiLU(),
            _conv(channels, channels, 1),
        )
        self.offset_conv2 = nn.Sequential(_conv(channels + previous, channels), _norm(channels), nn.SiLU())
        self.dcn = GuidedDeformConv(channels, deformable_groups)

    def forward(self, x: Tensor, cond: Tensor, previous_offset: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if hasattr(self, "downsample"):
            cond = self.downsample(cond)
        elif self.scale != 1:  # bilinear to the same size is the identity
            cond = _bilinear(cond, (cond.shape[-2] // self.scale, cond.shape[-1] // self.scale))
        offset = self.offset_conv1(torch.cat([cond, x], dim=1))
        if previous_offset is not None:
            offset = torch.cat([offset, previous_offset], dim=1)
        offset = self.offset_conv2(offset)
        return self.dcn(x, offset), offset


class MainDecoder(nn.Module):
    """The parallel decoder: from the top level down, upsample, warp that level's texture features
    (TextureWarping) and fuse both with a ResBlock. Keys `align_func_dict`, `pre_upsample_dict` (v1: Resample,
    v2: nearest x2 + 3x3 conv) and `decoder_dict`, per level name."""

    def __init__(self, widths: Sequence[int], cond_channels: int, deformable_groups: int, v1: bool) -> None:
        super().__init__()
        top = len(widths) - 1
        self.align_func_dict, self.pre_upsample_dict, self.decoder_dict = (
            nn.ModuleDict(),
            nn.ModuleDict(),
            nn.ModuleDict(),
        )
        for i in reversed(range(top + 1)):
            name, width = _level(i), widths[i]
            previous = 0 if i == top else widths[i + 1]
            self.align_func_dict[name] = TextureWarping(width, cond_channels, 2**i, deformable_groups, previous, v1)
            if i == top:
                continue
            self.pre_upsample_dict[name] = (
                Resample(previous, width, 2, "up")
                if v1
                else nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), _conv(previous, width))
            )
            self.decoder_dict[name] = ResBlock(2 * width, width, "shortcut_conv" if v1 else "residual_func")

    def forward(self, texture: Sequence[Tensor], cond: Tensor) -> Tensor:
        """`texture[i]`: the texture decoder's features at level i; `cond`: the input feature (full size)."""
        top = len(texture) - 1
        x, offset = self.align_func_dict[_level(top)](texture[top], cond)
        for i in reversed(range(top)):
            name = _level(i)
            x = self.pre_upsample_dict[name](x)
            # offsets are in pixels: twice as many at twice the resolution
            offset = 2 * F.interpolate(offset, scale_factor=2, mode="bilinear", align_corners=False)
            warped, offset = self.align_func_dict[name](texture[i], cond, offset)
            x = self.decoder_dict[name](torch.cat([x, warped], dim=1))
        return x


class Codebook(nn.Module):
    """`num_codes` learned code vectors (`embedding`): nearest-code search and lookup."""

    def __init__(self, num_codes: int, code_dim: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(num_codes, code_dim)

    def nearest(self, z: Tensor) -> Tensor:
        """(B, C, H, W) features -> (B, H, W) indices of the nearest codes (L2). The squared distance is
        expanded as |z|^2 + |e|^2 - 2 z.e in the reference's order and argmin takes the first of equal
        minima, so near-ties resolve as in the reference."""
        b, c, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, c)
        codes = self.embedding.weight
        distance = flat.pow(2).sum(1, keepdim=True) + codes.pow(2).sum(1) - 2 * (flat @ codes.t())
        return distance.argmin(1).view(b, h, w)

    def lookup(self, indices: Tensor) -> Tensor:
        """(B, H, W) code indices -> (B, C, H, W) code vectors."""
        return self.embedding(indices).permute(0, 3, 1, 2).contiguous()


# ----------------------------------------------------------------------------- VQFR v1


class _EncoderV1(nn.Module):
    """conv_in, then per level an optional Resample down (`pre_downsample_dict`) and ResBlocks
    (`encoder_dict`); GroupNorm-SiLU-conv on the top level (`enc_convout_dict`)."""

    def __init__(self, widths: Sequence[int], blocks: int) -> None:
        super().__init__()
        top = len(widths) - 1
        self.conv_in = _conv(3, widths[0])
        self.pre_downsample_dict, self.encoder_dict = nn.ModuleDict(), nn.ModuleDict()
        for i, width in enumerate(widths):
            self.pre_downsample_dict[_level(i)] = Resample(widths[max(i - 1, 0)], width, 2 if i else 1, "down")
            self.encoder_dict[_level(i)] = nn.Sequential(
                *(ResBlock(width, width, "shortcut_conv") for _ in range(blocks))
            )
        self.enc_convout_dict = nn.ModuleDict(
            {_level(top): nn.Sequential(_norm(widths[top]), nn.SiLU(), _conv(widths[top], widths[top]))}
        )

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv_in(x)
        for name in self.encoder_dict:
            x = self.encoder_dict[name](self.pre_downsample_dict[name](x))
        return self.enc_convout_dict[_level(len(self.encoder_dict) - 1)](x)


class _TextureDecoderV1(nn.Module):
    """From the top level down: Resample up (`pre_upsample_dict`, none at the top) and ResBlocks
    (`decoder_dict`); `conv_out` makes the texture image (trained with it, unused by the restorer)."""

    def __init__(self, widths: Sequence[int], blocks: int) -> None:
        super().__init__()
        top = len(widths) - 1
        self.decoder_dict, self.pre_upsample_dict = nn.ModuleDict(), nn.ModuleDict()
        for i in reversed(range(top + 1)):
            width = widths[i]
            self.decoder_dict[_level(i)] = nn.Sequential(
                *(ResBlock(width, width, "shortcut_conv") for _ in range(blocks))
            )
            self.pre_upsample_dict[_level(i)] = Resample(widths[min(i + 1, top)], width, 1 if i == top else 2, "up")
        self.conv_out = nn.Sequential(_norm(widths[0]), nn.SiLU(), _conv(widths[0], 3))

    def forward(self, x: Tensor) -> list[Tensor]:
        """Quantized top-level features -> the features of every level, index = level."""
        features = []
        for i in reversed(range(len(self.decoder_dict))):
            x = self.decoder_dict[_level(i)](self.pre_upsample_dict[_level(i)](x))
            features.append(x)
        return features[::-1]


class _MainDecoderV1(MainDecoder):
    """v1's main decoder ends with GroupNorm-SiLU (`conv_out_1`) and a 3x3 conv of [features, input image]."""

    def __init__(self, widths: Sequence[int], cond_channels: int, deformable_groups: int) -> None:
        super().__init__(widths, cond_channels, deformable_groups, v1=True)
        self.conv_out_1 = nn.Sequential(_norm(widths[0]), nn.SiLU())
        self.conv_out = nn.Sequential(_conv(widths[0] + 3, 3))

    def forward(self, texture: Sequence[Tensor], cond: Tensor, image: Tensor) -> Tensor:  # type: ignore[override]
        x = self.conv_out_1(super().forward(texture, cond))
        return self.conv_out(torch.cat([x, image], dim=1))


class _QuantizerV1(Codebook):
    """v1's quantizer: 1x1 conv to the code space (`quant_conv`), nearest code, 1x1 conv back (`post_quant_conv`)."""

    def __init__(self, channels: int, num_codes: int, code_dim: int) -> None:
        super().__init__(num_codes, code_dim)
        self.quant_conv = _conv(channels, code_dim, 1)
        self.post_quant_conv = _conv(code_dim, channels, 1)


class VQFRv1(nn.Module):
    """VQFR v1: (B, 3, size, size) RGB in [-1, 1] -> the restored image (main decoder), same shape.

    `options` override fields of the released configuration `V1_CONFIG` (76.56 M parameters); see VQFRConfig.
    """

    def __init__(self, **options: Any) -> None:
        super().__init__()
        config = replace(V1_CONFIG, **options)
        self.config = asdict(config)
        self.size = config.size
        widths = config.widths
        self._top = _level(len(widths) - 1)
        self.inpfeat_extraction = nn.ModuleDict({"conv": _conv(3, config.cond_channels)})
        self.encoder = _EncoderV1(widths, config.encoder_blocks)
        self.decoder = _TextureDecoderV1(widths, config.decoder_blocks)
        self.main_decoder = _MainDecoderV1(widths, config.cond_channels, config.deformable_groups)
        quantizer = _QuantizerV1(widths[-1], config.num_codes, config.code_dim)
        self.quantizer = nn.ModuleDict({"quantize_dict": nn.ModuleDict({self._top: quantizer})})

    @property
    def codebook(self) -> _QuantizerV1:
        return self.quantizer["quantize_dict"][self._top]  # type: ignore[return-value]

    def code_indices(self, x: Tensor) -> Tensor:
        """(B, 3, size, size) -> (B, h, w) indices of the codes the input is quantized to."""
        check_native_input(type(self).__name__, x, self.size)
        return self.codebook.nearest(self.codebook.quant_conv(self.encoder(x)))

    def forward(self, x: Tensor) -> Tensor:
        codebook = self.codebook
        quantized = codebook.post_quant_conv(codebook.lookup(self.code_indices(x)))
        cond = self.inpfeat_extraction["conv"](x)
        return self.main_decoder(self.decoder(quantized), cond, x)


# ----------------------------------------------------------------------------- VQFR v2


class _StridedDown(nn.Module):
    """Halves the resolution: zero pad right/bottom by 1, 3x3 conv with stride 2 (VQGAN's Downsample)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = _conv(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class _NearestUp(nn.Module):
    """Doubles the resolution: nearest x2, 3x3 conv (VQGAN's Upsample)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = _conv(channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def _v2_level_blocks(cin: int, cout: int, blocks: int, attention: bool) -> list[nn.Module]:
    """ResBlock(cin -> cout), then ResBlock(cout -> cout) `blocks - 1` times; each followed by attention on
    the top level."""
    out: list[nn.Module] = []
    for j in range(blocks):
        out.append(ResBlock(cin if j == 0 else cout, cout, "residual_func"))
        if attention:
            out.append(SelfAttention(cout))
    return out


def _v2_middle(channels: int) -> nn.Sequential:
    return nn.Sequential(
        ResBlock(channels, channels, "residual_func"),
        SelfAttention(channels),
        ResBlock(channels, channels, "residual_func"),
    )


class _EncoderV2(nn.Module):
    """conv_in; per level (`blocks.i`) a strided conv down (not at level 0) and ResBlocks (with attention on
    the top level); middle ResBlock-attention-ResBlock; GroupNorm-SiLU-conv to code_dim (`conv_out`)."""

    def __init__(self, widths: Sequence[int], blocks: int, code_dim: int) -> None:
        super().__init__()
        top = len(widths) - 1
        self.conv_in = _conv(3, widths[0])
        self.blocks = nn.ModuleList()
        for i, width in enumerate(widths):
            previous = widths[max(i - 1, 0)]
            down = [_StridedDown(previous)] if i else []
            self.blocks.append(nn.Sequential(*down, *_v2_level_blocks(previous, width, blocks, i == top)))
        self.mid_blocks = _v2_middle(widths[top])
        self.conv_out = nn.Sequential(_norm(widths[top]), nn.SiLU(), _conv(widths[top], code_dim))

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv_in(x)
        for block in self.blocks:
            x = block(x)
        return self.conv_out(self.mid_blocks(x))


class _TextureDecoderV2(nn.Module):
    """conv_in from code_dim; middle ResBlock-attention-ResBlock; from the top level down (`blocks.k` is level
    top - k) a nearest upsampling (not at the top) and ResBlocks (attention on the top level); `conv_out` is
    the image head (of the texture features, or of texture + fidelity_ratio * main)."""

    def __init__(self, widths: Sequence[int], blocks: int, code_dim: int) -> None:
        super().__init__()
        top = len(widths) - 1
        self.conv_in = _conv(code_dim, widths[top])
        self.mid_blocks = _v2_middle(widths[top])
        self.blocks = nn.ModuleList()
        for i in reversed(range(top + 1)):
            previous = widths[min(i + 1, top)]
            up = [_NearestUp(previous)] if i != top else []
            self.blocks.append(nn.Sequential(*up, *_v2_level_blocks(previous, widths[i], blocks, i == top)))
        self.conv_out = nn.Sequential(_norm(widths[0]), nn.SiLU(), _conv(widths[0], 3))

    def forward(self, x: Tensor) -> list[Tensor]:
        """Code vectors -> the features of every level, index = level."""
        x = self.mid_blocks(self.conv_in(x))
        features = []
        for block in self.blocks:
            x = block(x)
            features.append(x)
        return features[::-1]


class VQFRv2(nn.Module):
    """VQFR v2: (B, 3, size, size) RGB in [-1, 1] -> the restored image, same shape.

    `fidelity_ratio` in [0, 1] (a call option of VQFR's demo, `-f`, default 0): 0 for the best quality (the
    texture decoder alone), 1 for the best fidelity (all of the main branch). `options` override fields of the
    released configuration `V2_CONFIG` (83.49 M parameters); see VQFRConfig.
    """

    def __init__(self, fidelity_ratio: float = 0.0, **options: Any) -> None:
        super().__init__()
        config = replace(V2_CONFIG, **options)
        if not 0.0 <= float(fidelity_ratio) <= 1.0:
            raise ValueError(
                f"fidelity_ratio must be in [0, 1] (0: best quality, 1: best fidelity), got {fidelity_ratio}"
            )
        self.config = asdict(config)
        self.size = config.size
        widths = config.widths
        self.fidelity_ratio = float(fidelity_ratio)  # a call option: a plain attribute, not in the state dict
        self.encoder = _EncoderV2(widths, config.encoder_blocks, config.code_dim)
        self.feat2index = nn.Sequential(nn.LayerNorm(config.code_dim), nn.Linear(config.code_dim, config.num_codes))
        self.decoder = _TextureDecoderV2(widths, config.decoder_blocks, config.code_dim)
        self.main_branch = MainDecoder(widths, config.cond_channels, config.deformable_groups, v1=False)
        self.inpfeat_extraction = _conv(3, config.cond_channels)
        self.quantizer = Codebook(config.num_codes, config.code_dim)

    def code_indices(self, x: Tensor) -> Tensor:
        """(B, 3, size, size) -> (B, h, w) indices of the codes the head predicts (argmax; first of equal maxima)."""
        check_native_input(type(self).__name__, x, self.size)
        features = self.encoder(x)
        b, _, h, w = features.shape
        logits = self.feat2index(features.flatten(2).transpose(1, 2))  # (B, HW, num_codes)
        return logits.argmax(-1).view(b, h, w)

    def forward(self, x: Tensor) -> Tensor:
        texture = self.decoder(self.quantizer.lookup(self.code_indices(x)))
        features = texture[0]
        if self.fidelity_ratio != 0.0:
            main = self.main_branch(texture, self.inpfeat_extraction(x))
            features = features + self.fidelity_ratio * main
        return self.decoder.conv_out(features)
