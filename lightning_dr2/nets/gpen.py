"""GPEN (Yang et al., "GAN Prior Embedded Network for Blind Face Restoration in the Wild", CVPR 2021).

A StyleGAN2 generator (the GAN prior) behind a plain convolutional encoder: the encoder's deepest features,
through one linear layer and StyleGAN2's mapping network, give the style vector w, and its feature map at
every resolution takes the place of StyleGAN2's per-layer noise (concatenated to the modulated convolution's
output, "isconcat"). So the restoration forward draws no random numbers at all: the same face gives the same
output whatever the batch.

Written in plain torch from the architecture of yangxy/GPEN (`face_model/gpen_model.py`, `FullGenerator`),
with module and parameter names chosen so that the released `GPEN-BFR-512.pth` (and GPEN's other
`FullGenerator` files) load strictly. GPEN's fused CUDA ops have plain equivalents here: `upfirdn2d`
(upsample, pad, FIR filter, downsample) and `scaled_leaky_relu` (bias + leaky ReLU 0.2 with gain sqrt 2);
every weight uses StyleGAN's equalised learning rate (stored N(0, 1), scaled by 1/sqrt(fan_in) when used).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from lightning_dr2.nets.native_input import check_native_input

BLUR_TAPS = (1, 3, 3, 1)  # StyleGAN2's resampling filter (binomial), as GPEN builds every blur
LEAKY_SLOPE = 0.2
LEAKY_GAIN = math.sqrt(2.0)  # keeps the activations' second moment through a leaky ReLU
# GPEN's channel table is defined for these resolutions (4 ... 2048); the generator size is a power of two in it.
MIN_SIZE, MAX_SIZE = 8, 2048
# GPEN-BFR-512 as GPEN's face_enhancement.py / demo.py build it (FaceGAN: n_mlp 8, style_dim 512; README
# command: --in_size 512 --channel_multiplier 2 --narrow 1; isconcat and lr_mlp at FullGenerator's defaults).
BFR_512 = dict(size=512, style_dim=512, n_mlp=8, channel_multiplier=2, narrow=1.0, isconcat=True, lr_mlp=0.01)


# ------------------------------------------------------------------------------------------------ plain ops
def blur_kernel(taps: Sequence[float], gain: float = 1.0) -> Tensor:
    """The separable 2-D FIR filter of 1-D `taps` (outer product), normalised to sum `gain`."""
    k = torch.as_tensor(taps, dtype=torch.float32)
    k2 = torch.outer(k, k) if k.ndim == 1 else k
    return k2 / k2.sum() * gain


def upfirdn2d(x: Tensor, kernel: Tensor, up: int = 1, down: int = 1, pad: tuple[int, int] = (0, 0)) -> Tensor:
    """Upsample by zero insertion, pad (negative = crop), FIR-filter, downsample: StyleGAN2's resampling op.

    Per channel of x (B, C, H, W): insert `up - 1` zeros after every sample along both axes, pad both axes
    with pad = (before, after) zeros, convolve with `kernel` (a true convolution, i.e. the kernel flipped;
    'valid' region) and keep every `down`-th sample. The same on both axes, like every call in GPEN.
    """
    b, c, h, w = x.shape
    if up > 1:
        x = F.pad(x.reshape(b, c, h, 1, w, 1), (0, up - 1, 0, 0, 0, up - 1)).reshape(b, c, h * up, w * up)
    before, after = pad
    x = F.pad(x, (max(before, 0), max(after, 0), max(before, 0), max(after, 0)))
    height, width = x.shape[-2:]
    x = x[..., max(-before, 0) : height - max(-after, 0), max(-before, 0) : width - max(-after, 0)]
    weight = kernel.flip(0, 1).to(x.dtype).expand(c, 1, *kernel.shape)
    return F.conv2d(x, weight, stride=down, groups=c)


def scaled_leaky_relu(x: Tensor, bias: Tensor) -> Tensor:
    """StyleGAN2's 'fused' bias + leaky ReLU: sqrt(2) * leaky_relu(x + bias, 0.2), bias per channel (dim 1)."""
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return F.leaky_relu(x + bias.view(shape), LEAKY_SLOPE) * LEAKY_GAIN


def gpen_channels(resolution: int, channel_multiplier: float, narrow: float) -> int:
    """GPEN's feature width at `resolution`: 512 * narrow up to 32 px, then 256 * channel_multiplier * narrow at
    64 px, halving per octave."""
    if resolution <= 32:
        return int(512 * narrow)
    return int(16384 // resolution * channel_multiplier * narrow)


# ------------------------------------------------------------------------------------- equalised-lr layers
class BiasLeakyReLU(nn.Module):
    """`scaled_leaky_relu` with a learned per-channel bias (key `bias`)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        return scaled_leaky_relu(x, self.bias)


class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate; `lr_mul` scales weight and bias (the mapping network's 0.01)."""

    def __init__(
        self, in_dim: int, out_dim: int, lr_mul: float = 1.0, bias_init: float = 0.0, activate: bool = False
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)))
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.activate = activate

    def forward(self, x: Tensor) -> Tensor:
        bias = self.bias * self.lr_mul
        if self.activate:
            return scaled_leaky_relu(F.linear(x, self.weight * self.scale), bias)
        return F.linear(x, self.weight * self.scale, bias)


class EqualConv2d(nn.Module):
    """Conv2d with equalised learning rate (weights N(0, 1), scaled by 1/sqrt(fan_in) in forward)."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, stride: int = 1, padding: int = 0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel_size, kernel_size))
        self.scale = 1.0 / math.sqrt(in_ch * kernel_size**2)
        self.stride, self.padding = stride, padding

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight * self.scale, stride=self.stride, padding=self.padding)


class Blur(nn.Module):
    """`upfirdn2d` with a fixed filter (buffer `kernel`, part of GPEN's state dicts), padding and resampling."""

    def __init__(self, pad: tuple[int, int], gain: float = 1.0, up: int = 1, down: int = 1) -> None:
        super().__init__()
        self.register_buffer("kernel", blur_kernel(BLUR_TAPS, gain))
        self.pad, self.up, self.down = pad, up, down

    def forward(self, x: Tensor) -> Tensor:
        return upfirdn2d(x, self.kernel, self.up, self.down, self.pad)


def encoder_conv(in_ch: int, out_ch: int, kernel_size: int, downsample: bool) -> nn.Sequential:
    """GPEN's encoder stage: [blur,] conv (stride 2 when downsampling), bias + leaky ReLU; keys 0/1/2."""
    if not downsample:
        return nn.Sequential(EqualConv2d(in_ch, out_ch, kernel_size, padding=kernel_size // 2), BiasLeakyReLU(out_ch))
    # Blur to the anti-aliased grid, then a 'valid' stride-2 convolution: the output halves the input size.
    p = len(BLUR_TAPS) - 2 + kernel_size - 1
    return nn.Sequential(
        Blur(((p + 1) // 2, p // 2)), EqualConv2d(in_ch, out_ch, kernel_size, stride=2), BiasLeakyReLU(out_ch)
    )


# -------------------------------------------------------------------------------------- StyleGAN2 decoder
class ModulatedConv2d(nn.Module):
    """StyleGAN2's modulated convolution: the style scales the weight per input channel, then (optionally)
    demodulation renormalises every output filter; one grouped convolution per batch item's own weight.
    `upsample` doubles the size with a stride-2 transposed convolution followed by a blur."""

    def __init__(
        self, in_ch: int, out_ch: int, kernel_size: int, style_dim: int, demodulate: bool = True, upsample: bool = False
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, out_ch, in_ch, kernel_size, kernel_size))
        self.modulation = EqualLinear(style_dim, in_ch, bias_init=1.0)
        self.scale = 1.0 / math.sqrt(in_ch * kernel_size**2)
        self.in_ch, self.out_ch, self.kernel_size = in_ch, out_ch, kernel_size
        self.demodulate, self.upsample = demodulate, upsample
        if upsample:
            # The transposed conv gives 2H + k - 2 samples; the blur's padding brings them back to 2H.
            p = len(BLUR_TAPS) - 2 - (kernel_size - 1)
            self.blur = Blur(((p + 1) // 2 + 1, p // 2 + 1), gain=4.0)

    def forward(self, x: Tensor, style: Tensor) -> Tensor:
        batch, _, height, width = x.shape
        weight = self.scale * self.weight * self.modulation(style).view(batch, 1, self.in_ch, 1, 1)
        if self.demodulate:
            weight = weight * torch.rsqrt(weight.pow(2).sum(dim=(2, 3, 4), keepdim=True) + 1e-8)
        x = x.reshape(1, batch * self.in_ch, height, width)
        k = self.kernel_size
        if self.upsample:
            # conv_transpose2d wants (in, out, k, k) per group.
            weight = weight.transpose(1, 2).reshape(batch * self.in_ch, self.out_ch, k, k)
            out = F.conv_transpose2d(x, weight, stride=2, groups=batch)
            return self.blur(out.reshape(batch, self.out_ch, *out.shape[-2:]))
        out = F.conv2d(x, weight.reshape(batch * self.out_ch, self.in_ch, k, k), padding=k // 2, groups=batch)
        return out.reshape(batch, self.out_ch, *out.shape[-2:])


class FeatureInjection(nn.Module):
    """StyleGAN2's noise input, fed with the encoder's feature map instead of noise: weight * features,
    concatenated to the channels (isconcat, GPEN's default) or added to them."""

    def __init__(self, concat: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.concat = concat

    def forward(self, x: Tensor, features: Tensor) -> Tensor:
        if self.concat:
            return torch.cat((x, self.weight * features), dim=1)
        return x + self.weight * features


class StyledConv(nn.Module):
    """Modulated conv -> feature injection (`noise`) -> bias + leaky ReLU (`activate`)."""

    def __init__(self, in_ch: int, out_ch: int, style_dim: int, concat: bool, upsample: bool = False) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(in_ch, out_ch, 3, style_dim, upsample=upsample)
        self.noise = FeatureInjection(concat)
        self.activate = BiasLeakyReLU(out_ch * (2 if concat else 1))

    def forward(self, x: Tensor, style: Tensor, features: Tensor) -> Tensor:
        return self.activate(self.noise(self.conv(x, style), features))


class ToRGB(nn.Module):
    """1x1 modulated conv to RGB (no demodulation) + bias, added to the upsampled RGB of the previous scale."""

    def __init__(self, in_ch: int, style_dim: int, upsample: bool = True) -> None:
        super().__init__()
        if upsample:
            p = len(BLUR_TAPS) - 2
            self.upsample = Blur(((p + 1) // 2 + 1, p // 2), gain=4.0, up=2)
        self.conv = ModulatedConv2d(in_ch, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: Tensor, style: Tensor, skip: Tensor | None = None) -> Tensor:
        out = self.conv(x, style) + self.bias
        return out if skip is None else out + self.upsample(skip)


class ConstantInput(nn.Module):
    """The learned 4x4 starting map of StyleGAN2 (key `input`)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channels, 4, 4))

    def forward(self, batch: int) -> Tensor:
        return self.input.expand(batch, -1, -1, -1)


class PixelNorm(nn.Module):
    """Normalise each latent vector to unit root mean square (the mapping network's first layer)."""

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + 1e-8)


class StyleDecoder(nn.Module):
    """GPEN's StyleGAN2 generator (`generator.*` keys): mapping network `style`, constant input, one styled conv
    and ToRGB at 4 px, then per octave an upsampling and a plain styled conv and a ToRGB."""

    def __init__(
        self,
        size: int,
        style_dim: int,
        n_mlp: int,
        channel_multiplier: float,
        narrow: float,
        concat: bool,
        lr_mlp: float,
    ) -> None:
        super().__init__()
        mult = 2 if concat else 1
        width = [gpen_channels(2**i, channel_multiplier, narrow) for i in range(int(math.log2(size)) + 1)]
        self.style = nn.Sequential(
            PixelNorm(), *(EqualLinear(style_dim, style_dim, lr_mul=lr_mlp, activate=True) for _ in range(n_mlp))
        )
        self.input = ConstantInput(width[2])
        self.conv1 = StyledConv(width[2], width[2], style_dim, concat)
        self.to_rgb1 = ToRGB(width[2] * mult, style_dim, upsample=False)
        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        for level in range(3, len(width)):
            self.convs.append(StyledConv(width[level - 1] * mult, width[level], style_dim, concat, upsample=True))
            self.convs.append(StyledConv(width[level] * mult, width[level], style_dim, concat))
            self.to_rgbs.append(ToRGB(width[level] * mult, style_dim))

    def forward(self, latent: Tensor, features: Sequence[Tensor]) -> Tensor:
        """RGB from the pre-mapping latent (B, style_dim) and one feature map per resolution, 4 px first.

        GPEN feeds one style to every layer (no style mixing, truncation 1), so w is computed once.
        """
        w = self.style(latent)
        x = self.conv1(self.input(latent.shape[0]), w, features[0])
        rgb = self.to_rgb1(x, w)
        for level, to_rgb in enumerate(self.to_rgbs):
            x = self.convs[2 * level](x, w, features[level + 1])
            x = self.convs[2 * level + 1](x, w, features[level + 1])
            rgb = to_rgb(x, w, rgb)
        return rgb


# ------------------------------------------------------------------------------------------------- GPEN
class GPEN(nn.Module):
    """GPEN's face-restoration generator (`FullGenerator`): (B, 3, size, size) RGB in [-1, 1] -> same.

    Keys `ecd0 ... ecd{log2(size) - 2}` (encoder, full size down to 4 px), `final_linear` (4x4 features ->
    latent) and `generator.*` (the StyleGAN2 decoder). Defaults: GPEN-BFR-512 (`BFR_512`).
    """

    def __init__(
        self,
        size: int = 512,
        style_dim: int = 512,
        n_mlp: int = 8,
        channel_multiplier: float = 2,
        narrow: float = 1.0,
        isconcat: bool = True,
        lr_mlp: float = 0.01,
    ) -> None:
        super().__init__()
        if size < MIN_SIZE or size > MAX_SIZE or size & (size - 1):
            raise ValueError(f"GPEN size must be a power of two in [{MIN_SIZE}, {MAX_SIZE}], got {size}")
        if n_mlp < 1 or style_dim < 1 or narrow <= 0 or channel_multiplier <= 0:
            raise ValueError(
                f"GPEN needs n_mlp >= 1, style_dim >= 1, narrow > 0, channel_multiplier > 0; got n_mlp={n_mlp}, "
                f"style_dim={style_dim}, narrow={narrow}, channel_multiplier={channel_multiplier}"
            )
        self.size = size
        self.config = dict(
            size=size,
            style_dim=style_dim,
            n_mlp=n_mlp,
            channel_multiplier=channel_multiplier,
            narrow=narrow,
            isconcat=isconcat,
            lr_mlp=lr_mlp,
        )
        self.generator = StyleDecoder(size, style_dim, n_mlp, channel_multiplier, narrow, isconcat, lr_mlp)
        levels = int(math.log2(size))
        width = [gpen_channels(2**i, channel_multiplier, narrow) for i in range(levels + 1)]
        self.n_stages = levels - 1  # encoder stages: size, size/2, ..., 4 px
        self.ecd0 = nn.Sequential(encoder_conv(3, width[levels], 1, downsample=False))
        for stage in range(1, self.n_stages):
            level = levels - stage
            self.add_module(f"ecd{stage}", nn.Sequential(encoder_conv(width[level + 1], width[level], 3, True)))
        self.final_linear = nn.Sequential(EqualLinear(width[2] * 16, style_dim, activate=True))

    def forward(self, x: Tensor) -> Tensor:
        check_native_input("GPEN", x, self.size)
        features = []
        for stage in range(self.n_stages):
            x = getattr(self, f"ecd{stage}")(x)
            features.append(x)
        latent = self.final_linear(x.flatten(1))
        return self.generator(latent, features[::-1])
