"""Gaussian noise drawn per image, so an image's result does not depend on its batch or GPU count."""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import torch
from torch import Tensor


class PerImageNoise:
    """`noise(like) -> Tensor`: one generator per image (seeded with `seeds[i]`), each draw in image order.

    Batched samplers call this for every Gaussian draw; image i's stream of draws is the same whether
    it is sampled alone, in a batch of 32, or on another rank.
    """

    def __init__(self, seeds: Sequence[int], device: torch.device | str = "cpu") -> None:
        self.seeds = [int(s) for s in seeds]
        self.device = torch.device(device)
        self.generators = [torch.Generator(device=self.device).manual_seed(s) for s in self.seeds]

    def __len__(self) -> int:
        return len(self.seeds)

    def __call__(self, like: Tensor) -> Tensor:
        if like.shape[0] != len(self.generators):
            raise ValueError(
                f"noise for a batch of {like.shape[0]} requested from {len(self.generators)} per-image generators"
            )
        draws = [torch.randn(like.shape[1:], generator=g, device=self.device) for g in self.generators]
        return torch.stack(draws).to(device=like.device, dtype=like.dtype)


def image_seed(base_seed: int, name: str) -> int:
    """A per-image seed from the run seed and the image's relative path.

    Results then depend on neither the order of the files, the batch an image lands in, nor the number
    of GPUs; the seed is recorded in the restore manifest.
    """
    return (int(base_seed) * 1_000_003 + zlib.crc32(name.encode("utf-8"))) % (2**63 - 1)
