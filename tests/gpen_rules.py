"""GPEN's fixture recipe, shared by tests/test_gpen.py and the (uncommitted) script that recorded the fixtures
from the reference code: the seeded-weights std rule for its equalised-lr layers, the tiny configurations and
their inputs."""

from __future__ import annotations

import torch

LR_MLP = 0.01  # the mapping network's learning-rate multiplier (GPEN's default)

# name -> (GPEN config, weights seed, input seed, batch): the architecture of GPEN-BFR-512 at 64 px and 1/8 width.
TINY_CASES = {
    "concat": (
        dict(size=64, style_dim=64, n_mlp=3, channel_multiplier=1, narrow=0.125, isconcat=True, lr_mlp=LR_MLP),
        0,
        1,
        2,
    ),
    "add": (
        dict(size=64, style_dim=32, n_mlp=2, channel_multiplier=2, narrow=0.0625, isconcat=False, lr_mlp=LR_MLP),
        3,
        4,
        2,
    ),
}


def gpen_std(key: str, shape: tuple[int, ...]) -> float:
    """Standard deviations for GPEN's keys, as its equalised-lr layers expect them.

    Weights are stored N(0, 1) and scaled by 1/sqrt(fan_in) when used (the mapping MLP's stored N(0, 1/lr_mul^2)
    and its biases are multiplied by lr_mul): unit std keeps activations O(1) through the 30-odd layers.
    Modulation biases (initialised to 1) get unit spread, the feature-injection gains unit std so the encoder's
    features visibly count, and the blur/upsample filters (buffers `kernel`, fixed [1,3,3,1] in released files)
    are random too, so a flipped or misplaced filter tap cannot hide behind a symmetric kernel.
    """
    if key.endswith(".kernel"):
        return 0.25
    if key.startswith("generator.style."):
        return 1.0 / LR_MLP if key.endswith(".weight") else 0.1 / LR_MLP
    if len(shape) >= 2 or key.endswith(("modulation.bias", "noise.weight")):
        return 1.0
    return 0.1


def input_images(batch: int, size: int, seed: int) -> torch.Tensor:
    """Uniform [-1, 1] test images (B, 3, size, size) from a seed."""
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, size, size, generator=gen) * 2 - 1
