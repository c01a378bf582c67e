"""Unconditional sampling with per-image seeds (sample grids, FID samples)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from lightning_dr2.diffusion.gaussian import GaussianDiffusion
from lightning_dr2.diffusion.noise import PerImageNoise


@torch.no_grad()
def sample_images(
    model: nn.Module,
    diffusion: GaussianDiffusion,
    seeds: Sequence[int],
    image_size: int,
    method: str = "ddim",
    eta: float = 0.0,
    device: torch.device | str = "cpu",
    channels: int = 3,
    progress: bool = False,
) -> Tensor:
    """Sample `len(seeds)` images in [-1, 1] over `diffusion`'s (respaced) grid.

    Image i is fully determined by `seeds[i]` (initial noise and every later draw), so a grid does not
    change with batch size. `method`: "ddim" (eta=0 deterministic) or "ddpm" (ancestral).
    """
    if method not in ("ddim", "ddpm"):
        raise ValueError(f"sampling method must be 'ddim' or 'ddpm', got {method!r}")
    noise = PerImageNoise(seeds, device)
    x = noise(torch.empty(len(seeds), channels, image_size, image_size, device=device))
    steps = range(diffusion.num_timesteps - 1, -1, -1)
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc=f"{method} sampling")
    for i in steps:
        t = torch.full((x.shape[0],), i, dtype=torch.long, device=x.device)
        if method == "ddim":
            step_noise = noise(x) if eta > 0 else torch.zeros_like(x)
            x = diffusion.ddim_sample(model, x, t, eta=eta, noise=step_noise)["sample"]
        else:
            x = diffusion.p_sample(model, x, t, noise=noise(x))["sample"]
    return x.clamp(-1, 1)
