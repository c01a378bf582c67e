"""Seeded random weights addressed by key name: the one rule for reference fixtures of restoration networks.

A fixture recorded from a reference implementation stores its input, its output and the rule's seed, not
400 MB of weights: the reference code and ours each fill their network with `keyed_random_state_dict` over
the same key names and shapes (the released key layout), so the values depend on the key alone, never on
the order in which either implementation registers its parameters. Fixtures made this way say so in
tests/fixtures/README.md.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping

import torch

StdRule = Callable[[str, tuple[int, ...]], float]


def fan_in_std(key: str, shape: tuple[int, ...]) -> float:
    """1/sqrt(fan_in) for weights with >= 2 dims (activations keep their scale through deep nets), 0.1 else."""
    if len(shape) >= 2:
        fan_in = 1
        for n in shape[1:]:
            fan_in *= n
        return fan_in**-0.5
    return 0.1


def key_seed(seed: int, key: str) -> int:
    return (int(seed) * 1_000_003 + zlib.crc32(key.encode("utf-8"))) % (2**63 - 1)


def keyed_random_state_dict(
    reference: Mapping[str, torch.Tensor], seed: int, std: StdRule = fan_in_std
) -> dict[str, torch.Tensor]:
    """A state dict with `reference`'s keys, shapes and dtypes, every value drawn from its own generator
    seeded by (seed, key): floats ~ N(0, std(key, shape)^2); `running_var` ~ 1 + 0.1 |N(0, 1)| (positive);
    integer tensors (counters such as `num_batches_tracked`) zero."""
    out: dict[str, torch.Tensor] = {}
    for key, like in reference.items():
        shape = tuple(like.shape)
        if not like.is_floating_point():
            out[key] = torch.zeros(shape, dtype=like.dtype)
            continue
        gen = torch.Generator().manual_seed(key_seed(seed, key))
        noise = torch.randn(shape, generator=gen, dtype=torch.float64)
        value = 1.0 + 0.1 * noise.abs() if key.endswith("running_var") else noise * std(key, shape)
        out[key] = value.to(like.dtype)
    return out


def unit_norm_std(key: str, shape: tuple[int, ...]) -> float:
    """`fan_in_std`, but std 1 for 1-D `.weight` tensors (the scales of GroupNorm / LayerNorm, the only 1-D
    weights): with scales ~ N(0, 0.1^2) deep GroupNorm networks shrink every feature to its biases, and a
    codebook lookup (VQFR) would pick the same few codes everywhere."""
    if len(shape) == 1 and key.endswith(".weight"):
        return 1.0
    return fan_in_std(key, shape)
