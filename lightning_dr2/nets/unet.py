"""The ADM UNet of guided-diffusion (Dhariwal & Nichol, 2021), written for this project.

DR2, ILVR and P2-weighting publish FFHQ-256 checkpoints of this network, so module names, parameter
shapes and numerics follow guided-diffusion's `UNetModel` exactly: their state dicts load with
`strict=True` and give the same outputs. What differs is how it runs: attention goes through
`scaled_dot_product_attention`, the model is channels_last friendly, mixed precision comes from
`torch.autocast` (bf16) rather than guided-diffusion's fp16 weight conversion, and activation
checkpointing uses the non-reentrant `torch.utils.checkpoint`.

The network knows nothing about diffusion: it maps `(x_t, t[, y]) -> output channels`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

__all__ = [
    "DR2_FFHQ256_FLAGS",
    "FLAG_DEFAULTS",
    "AttentionBlock",
    "Downsample",
    "GroupNorm32",
    "QKVAttention",
    "QKVAttentionLegacy",
    "ResBlock",
    "TimestepBlock",
    "TimestepEmbedSequential",
    "UNet",
    "Upsample",
    "timestep_embedding",
]

# guided-diffusion's `model_and_diffusion_defaults()` restricted to the flags `create_model` uses.
FLAG_DEFAULTS: dict[str, Any] = {
    "image_size": 64,
    "num_channels": 128,
    "num_res_blocks": 2,
    "channel_mult": "",
    "learn_sigma": False,
    "class_cond": False,
    "use_checkpoint": False,
    "attention_resolutions": "16,8",
    "num_heads": 4,
    "num_head_channels": -1,
    "num_heads_upsample": -1,
    "use_scale_shift_norm": True,
    "dropout": 0.0,
    "resblock_updown": False,
    "use_fp16": False,
    "use_new_attention_order": False,
}

# The network of DR2_FFHQ.pkl, ILVR's ffhq_10m.pt and P2-weighting's FFHQ-256 model (93.56 M parameters).
DR2_FFHQ256_FLAGS: dict[str, Any] = {
    **FLAG_DEFAULTS,
    "image_size": 256,
    "num_channels": 128,
    "num_res_blocks": 1,
    "channel_mult": "",
    "learn_sigma": True,
    "attention_resolutions": "16",
    "num_head_channels": 64,
    "resblock_updown": True,
}

# guided-diffusion's choice of channel multipliers when `channel_mult` is "".
_DEFAULT_CHANNEL_MULT: dict[int, tuple[float, ...]] = {
    512: (0.5, 1, 1, 2, 2, 4, 4),
    256: (1, 1, 2, 2, 4, 4),
    128: (1, 1, 2, 3, 4),
    64: (1, 2, 3, 4),
}

NUM_CLASSES = 1000  # ImageNet, as guided-diffusion's class_cond models


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding `[cos(t * f), sin(t * f)]` of 1-D timesteps, shape (B, dim), always float32.

    Timesteps reach ~1000 radians; in bf16 the phases would be garbage, so this runs with autocast
    disabled and in float32 whatever the surrounding precision.
    """
    if timesteps.ndim != 1:
        raise ValueError(f"timesteps must be a 1-D tensor of shape (B,), got shape {tuple(timesteps.shape)}")
    with torch.autocast(device_type=timesteps.device.type, enabled=False):
        half = dim // 2
        freqs = torch.exp(
            -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half
        )
        args = timesteps.float()[:, None] * freqs[None]
        embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        if dim % 2:
            embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
    return embedding


def zero_module(module: nn.Module) -> nn.Module:
    """Zero a module's parameters: residual branches and the output start as identity / zero."""
    for p in module.parameters():
        p.detach().zero_()
    return module


class GroupNorm32(nn.GroupNorm):
    """GroupNorm with 32 groups, computed in float32 and cast back (the statistics need the range)."""

    GROUPS = 32

    def __init__(self, channels: int) -> None:
        super().__init__(self.GROUPS, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Affine parameters are cast too, so a model moved wholesale to bf16 still normalises in fp32.
        weight, bias = self.weight.float(), self.bias.float()
        return F.group_norm(x.float(), self.num_groups, weight, bias, self.eps).to(x.dtype)


class TimestepBlock(nn.Module):
    """A block whose forward also takes the timestep (and class) embedding."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError


class TimestepEmbedSequential(nn.Sequential):
    """`nn.Sequential` that hands the embedding to the children that take one."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, TimestepBlock) else layer(x)
        return x


class Upsample(nn.Module):
    """Nearest-neighbour x2, optionally followed by a 3x3 conv (key `conv`)."""

    def __init__(self, channels: int, use_conv: bool, out_channels: int | None = None) -> None:
        super().__init__()
        self.channels = channels
        self.out_channels = out_channels or channels
        self.use_conv = use_conv
        if use_conv:
            self.conv = nn.Conv2d(channels, self.out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv(x) if self.use_conv else x


class Downsample(nn.Module):
    """Halve the resolution with a stride-2 3x3 conv, or a 2x2 average pool (key `op` either way)."""

    def __init__(self, channels: int, use_conv: bool, out_channels: int | None = None) -> None:
        super().__init__()
        self.channels = channels
        self.out_channels = out_channels or channels
        if use_conv:
            self.op: nn.Module = nn.Conv2d(channels, self.out_channels, 3, stride=2, padding=1)
        else:
            if self.out_channels != channels:
                raise ValueError("average-pool downsampling cannot change the channel count")
            self.op = nn.AvgPool2d(kernel_size=2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class ResBlock(TimestepBlock):
    """Residual block conditioned on the embedding, optionally resampling (`up`/`down`) inside.

    With `use_scale_shift_norm` the embedding modulates the normalised features FiLM-style,
    `norm(h) * (1 + scale) + shift`; otherwise it is added before the second norm.
    """

    def __init__(
        self,
        channels: int,
        emb_channels: int,
        dropout: float,
        out_channels: int | None = None,
        *,
        use_conv: bool = False,
        use_scale_shift_norm: bool = False,
        use_checkpoint: bool = False,
        up: bool = False,
        down: bool = False,
    ) -> None:
        super().__init__()
        self.channels = channels
        self.out_channels = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.use_checkpoint = use_checkpoint

        self.in_layers = nn.Sequential(
            GroupNorm32(channels), nn.SiLU(), nn.Conv2d(channels, self.out_channels, 3, padding=1)
        )
        self.updown = up or down
        if up:
            self.h_upd: nn.Module = Upsample(channels, False)
            self.x_upd: nn.Module = Upsample(channels, False)
        elif down:
            self.h_upd = Downsample(channels, False)
            self.x_upd = Downsample(channels, False)
        else:
            self.h_upd = self.x_upd = nn.Identity()

        emb_out = 2 * self.out_channels if use_scale_shift_norm else self.out_channels
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, emb_out))
        self.out_layers = nn.Sequential(
            GroupNorm32(self.out_channels),
            nn.SiLU(),
            nn.Dropout(p=dropout),
            zero_module(nn.Conv2d(self.out_channels, self.out_channels, 3, padding=1)),
        )
        if self.out_channels == channels:
            self.skip_connection: nn.Module = nn.Identity()
        elif use_conv:
            self.skip_connection = nn.Conv2d(channels, self.out_channels, 3, padding=1)
        else:
            self.skip_connection = nn.Conv2d(channels, self.out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if self.use_checkpoint and self.training and torch.is_grad_enabled():
            return checkpoint(self._forward, x, emb, use_reentrant=False)
        return self._forward(x, emb)

    def _forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if self.updown:
            # Resample between the activation and the conv, as guided-diffusion does.
            h = self.in_layers[:-1](x)
            h = self.h_upd(h)
            x = self.x_upd(x)
            h = self.in_layers[-1](h)
        else:
            h = self.in_layers(x)
        emb_out = self.emb_layers(emb).to(h.dtype)[:, :, None, None]
        if self.use_scale_shift_norm:
            scale, shift = emb_out.chunk(2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift
            h = self.out_layers[1:](h)
        else:
            h = self.out_layers(h + emb_out)
        return self.skip_connection(x) + h


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Attention over (B, heads, ch, T) tensors; returns (B, heads * ch, T).

    SDPA's default scale 1/sqrt(ch) equals guided-diffusion's (q / ch**0.25) . (k / ch**0.25).
    """
    b, heads, ch, length = q.shape
    out = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
    return out.transpose(-1, -2).reshape(b, heads * ch, length)


class QKVAttention(nn.Module):
    """Multi-head attention on a fused qkv of layout (B, [q|k|v] * heads * ch, T) (the "new order")."""

    def __init__(self, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads

    def split(self, qkv: torch.Tensor, ch: int) -> tuple[torch.Tensor, ...]:
        """q, k, v of shape (B, heads, ch, T)."""
        return qkv.reshape(qkv.shape[0], 3, self.n_heads, ch, qkv.shape[-1]).unbind(1)

    def forward(self, qkv: torch.Tensor) -> torch.Tensor:
        q, k, v = self.split(qkv, qkv.shape[1] // (3 * self.n_heads))
        return _sdpa(q, k, v)


class QKVAttentionLegacy(QKVAttention):
    """Multi-head attention on a fused qkv of layout (B, heads * [q|k|v] * ch, T) (the original ADM order)."""

    def split(self, qkv: torch.Tensor, ch: int) -> tuple[torch.Tensor, ...]:
        return qkv.reshape(qkv.shape[0], self.n_heads, 3 * ch, qkv.shape[-1]).split(ch, dim=2)


class AttentionBlock(nn.Module):
    """Self-attention over all spatial positions, as a residual branch (zero-initialised projection)."""

    def __init__(
        self,
        channels: int,
        num_heads: int = 1,
        num_head_channels: int = -1,
        *,
        use_checkpoint: bool = False,
        use_new_attention_order: bool = False,
    ) -> None:
        super().__init__()
        self.channels = channels
        if num_head_channels == -1:
            self.num_heads = num_heads
        else:
            if channels % num_head_channels:
                raise ValueError(f"channels {channels} not divisible by num_head_channels {num_head_channels}")
            self.num_heads = channels // num_head_channels
        if channels % self.num_heads:
            raise ValueError(f"channels {channels} not divisible by num_heads {self.num_heads}")
        self.use_checkpoint = use_checkpoint
        self.norm = GroupNorm32(channels)
        self.qkv = nn.Conv1d(channels, channels * 3, 1)
        self.attention = QKVAttention(self.num_heads) if use_new_attention_order else QKVAttentionLegacy(self.num_heads)
        self.proj_out = zero_module(nn.Conv1d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_checkpoint and self.training and torch.is_grad_enabled():
            return checkpoint(self._forward, x, use_reentrant=False)
        return self._forward(x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, *spatial = x.shape
        x = x.reshape(b, c, -1)  # reshape, not view: x may be channels_last
        h = self.proj_out(self.attention(self.qkv(self.norm(x))))
        return (x + h).reshape(b, c, *spatial)


class UNet(nn.Module):
    """guided-diffusion's `UNetModel` (2-D, conv resampling), with identical state-dict keys.

    `attention_resolutions` are downsample rates (`ds` = image_size // resolution), as in
    guided-diffusion's constructor; `UNet.from_flags` takes the `create_model` flags instead.
    `image_size` is informational (inputs only need sides divisible by 2**(len(channel_mult)-1)).
    There is no `use_fp16`: run under `torch.autocast(..., dtype=torch.bfloat16)` for mixed precision.
    """

    def __init__(
        self,
        *,
        in_channels: int = 3,
        model_channels: int,
        out_channels: int,
        num_res_blocks: int,
        attention_resolutions: Iterable[int],
        dropout: float = 0.0,
        channel_mult: Iterable[float] = (1, 2, 4, 8),
        num_classes: int | None = None,
        use_checkpoint: bool = False,
        num_heads: int = 1,
        num_head_channels: int = -1,
        num_heads_upsample: int = -1,
        use_scale_shift_norm: bool = False,
        resblock_updown: bool = False,
        use_new_attention_order: bool = False,
        image_size: int | None = None,
    ) -> None:
        super().__init__()
        if num_heads_upsample == -1:
            num_heads_upsample = num_heads
        channel_mult = tuple(channel_mult)
        widths = sorted({int(m * model_channels) for m in channel_mult})
        if any(w % GroupNorm32.GROUPS for w in widths):
            raise ValueError(
                f"num_channels={model_channels} with channel_mult={channel_mult} gives widths {widths}; every "
                f"width must be a multiple of {GroupNorm32.GROUPS} (GroupNorm with {GroupNorm32.GROUPS} groups, "
                "as in guided-diffusion): use e.g. num_channels=32, 64 or 128"
            )
        attention_resolutions = tuple(int(ds) for ds in attention_resolutions)
        self.image_size = image_size
        self.in_channels = in_channels
        self.model_channels = model_channels
        self.out_channels = out_channels
        self.num_res_blocks = num_res_blocks
        self.attention_resolutions = attention_resolutions
        self.channel_mult = channel_mult
        self.num_classes = num_classes
        self.flags: dict[str, Any] = {}  # filled by from_flags; saved next to exported weights

        time_embed_dim = model_channels * 4
        self.time_embed = nn.Sequential(
            nn.Linear(model_channels, time_embed_dim), nn.SiLU(), nn.Linear(time_embed_dim, time_embed_dim)
        )
        if num_classes is not None:
            self.label_emb = nn.Embedding(num_classes, time_embed_dim)

        def res_block(ch_in: int, ch_out: int, **updown: bool) -> ResBlock:
            return ResBlock(
                ch_in,
                time_embed_dim,
                dropout,
                ch_out,
                use_scale_shift_norm=use_scale_shift_norm,
                use_checkpoint=use_checkpoint,
                **updown,
            )

        def attention(ch_in: int, heads: int) -> AttentionBlock:
            return AttentionBlock(
                ch_in,
                heads,
                num_head_channels,
                use_checkpoint=use_checkpoint,
                use_new_attention_order=use_new_attention_order,
            )

        ch = input_ch = int(channel_mult[0] * model_channels)
        self.input_blocks = nn.ModuleList([TimestepEmbedSequential(nn.Conv2d(in_channels, ch, 3, padding=1))])
        skip_chans = [ch]
        ds = 1
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers: list[nn.Module] = [res_block(ch, int(mult * model_channels))]
                ch = int(mult * model_channels)
                if ds in attention_resolutions:
                    layers.append(attention(ch, num_heads))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                skip_chans.append(ch)
            if level != len(channel_mult) - 1:
                down = res_block(ch, ch, down=True) if resblock_updown else Downsample(ch, True)
                self.input_blocks.append(TimestepEmbedSequential(down))
                skip_chans.append(ch)
                ds *= 2

        self.middle_block = TimestepEmbedSequential(res_block(ch, ch), attention(ch, num_heads), res_block(ch, ch))

        self.output_blocks = nn.ModuleList([])
        for level, mult in reversed(list(enumerate(channel_mult))):
            for i in range(num_res_blocks + 1):
                layers = [res_block(ch + skip_chans.pop(), int(model_channels * mult))]
                ch = int(model_channels * mult)
                if ds in attention_resolutions:
                    layers.append(attention(ch, num_heads_upsample))
                if level and i == num_res_blocks:
                    layers.append(res_block(ch, ch, up=True) if resblock_updown else Upsample(ch, True))
                    ds //= 2
                self.output_blocks.append(TimestepEmbedSequential(*layers))

        self.out = nn.Sequential(
            GroupNorm32(ch), nn.SiLU(), zero_module(nn.Conv2d(input_ch, out_channels, 3, padding=1))
        )

    @classmethod
    def from_flags(cls, flags: Mapping[str, Any]) -> UNet:
        """Build the network from guided-diffusion `create_model` flags (names and value formats).

        Missing flags take guided-diffusion's defaults; unknown names raise ValueError. `use_fp16` is
        accepted and ignored (use autocast). The normalised flags are kept on `model.flags`.
        """
        norm = normalise_flags(flags)
        ds = tuple(norm["image_size"] // int(r) for r in norm["attention_resolutions"].split(",") if r)
        model = cls(
            in_channels=3,
            model_channels=norm["num_channels"],
            out_channels=6 if norm["learn_sigma"] else 3,
            num_res_blocks=norm["num_res_blocks"],
            attention_resolutions=ds,
            dropout=norm["dropout"],
            channel_mult=_parse_channel_mult(norm["channel_mult"]),
            num_classes=NUM_CLASSES if norm["class_cond"] else None,
            use_checkpoint=norm["use_checkpoint"],
            num_heads=norm["num_heads"],
            num_head_channels=norm["num_head_channels"],
            num_heads_upsample=norm["num_heads_upsample"],
            use_scale_shift_norm=norm["use_scale_shift_norm"],
            resblock_updown=norm["resblock_updown"],
            use_new_attention_order=norm["use_new_attention_order"],
            image_size=norm["image_size"],
        )
        model.flags = norm
        return model

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Predict the output channels for a noisy batch `x` (B,C,H,W) at timesteps `t` (B,), labels `y` (B,).

        The output has `x`'s dtype (under autocast too), so diffusion losses stay in float32.
        """
        if (y is None) != (self.num_classes is None):
            raise ValueError(
                "class labels y are required for a class-conditional UNet"
                if y is None
                else "y was given but this UNet is not class-conditional (class_cond=False)"
            )
        factor = 2 ** (len(self.channel_mult) - 1)
        if x.ndim != 4 or x.shape[-1] % factor or x.shape[-2] % factor:
            raise ValueError(f"expected x of shape (B, C, H, W) with H, W divisible by {factor}, got {tuple(x.shape)}")
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        if t.shape != (x.shape[0],):
            raise ValueError(f"expected timesteps t of shape ({x.shape[0]},), got {tuple(t.shape)}")

        weight_dtype = self.time_embed[0].weight.dtype
        emb = self.time_embed(timestep_embedding(t, self.model_channels).to(weight_dtype))
        if y is not None:
            emb = emb + self.label_emb(y)

        h = x.to(self.input_blocks[0][0].weight.dtype)
        skips = []
        for block in self.input_blocks:
            h = block(h, emb)
            skips.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(h).to(x.dtype)


def normalise_flags(flags: Mapping[str, Any]) -> dict[str, Any]:
    """Fill defaults, check names and types, and resolve `channel_mult`/`attention_resolutions` to strings.

    The result is a plain dict in guided-diffusion's formats (comma strings), explicit enough to
    rebuild the same network later from a saved copy.
    """
    unknown = sorted(set(flags) - set(FLAG_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown UNet flag(s) {unknown}; known flags: {sorted(FLAG_DEFAULTS)}")
    merged = {**FLAG_DEFAULTS, **flags}
    out: dict[str, Any] = {}
    for name, default in FLAG_DEFAULTS.items():
        value = merged[name]
        if name in ("channel_mult", "attention_resolutions"):
            continue
        if isinstance(default, bool):
            out[name] = _to_bool(name, value)
        elif isinstance(default, int):
            out[name] = _to_int(name, value)
        else:
            out[name] = float(value)

    mult = merged["channel_mult"]
    if mult in ("", None):
        if out["image_size"] not in _DEFAULT_CHANNEL_MULT:
            raise ValueError(
                f"no default channel_mult for image_size {out['image_size']} "
                f"(known: {sorted(_DEFAULT_CHANNEL_MULT)}); set channel_mult explicitly"
            )
        mult = _DEFAULT_CHANNEL_MULT[out["image_size"]]
    out["channel_mult"] = _join(_parse_channel_mult(mult))

    res = merged["attention_resolutions"]
    res_list = _split(res) if isinstance(res, str) else list(res)
    try:
        out["attention_resolutions"] = ",".join(str(int(r)) for r in res_list)
    except (TypeError, ValueError) as err:
        raise ValueError(f"attention_resolutions must be integers, got {res!r}") from err
    return {name: out[name] for name in FLAG_DEFAULTS}


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _parse_channel_mult(value: str | Iterable[float]) -> tuple[float, ...]:
    parts = _split(value) if isinstance(value, str) else list(value)
    try:
        mult = tuple(float(p) for p in parts)
    except (TypeError, ValueError) as err:
        raise ValueError(f"channel_mult must be numbers, got {value!r}") from err
    if not mult:
        raise ValueError("channel_mult is empty")
    return tuple(int(m) if float(m).is_integer() else m for m in mult)


def _join(values: Iterable[float]) -> str:
    return ",".join(str(v) for v in values)


def _to_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.strip().lower() in ("true", "1", "yes")
    raise ValueError(f"UNet flag {name} must be a boolean, got {value!r}")


def _to_int(name: str, value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(f"UNet flag {name} must be an integer, got {value!r}")
    try:
        as_int = int(value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"UNet flag {name} must be an integer, got {value!r}") from err
    if as_int != float(value):
        raise ValueError(f"UNet flag {name} must be an integer, got {value!r}")
    return as_int
