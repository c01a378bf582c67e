"""Beta schedules of the forward (noising) process, as in guided-diffusion / improved-diffusion.

The published FFHQ DDPMs (DR2, ILVR, P2) use the linear schedule over 1000 steps; reproducing their
numbers requires the same float64 values, so schedules are computed in numpy float64.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

SCHEDULES = ("linear", "cosine")


def beta_schedule(name: str, steps: int) -> np.ndarray:
    """Return the float64 betas of schedule `name` ("linear" or "cosine") over `steps` steps.

    "linear" is Ho et al.'s 1e-4..0.02 over 1000 steps, scaled by 1000/steps so any step count
    keeps the same total noise; "cosine" is Nichol & Dhariwal's alpha_bar = cos^2 (s = 0.008).
    """
    if steps < 1:
        raise ValueError(f"diffusion steps must be >= 1, got {steps}")
    if name == "linear":
        if steps <= 20:
            raise ValueError(
                f"the linear schedule needs more than 20 steps, got {steps}: its betas scale with "
                "1000/steps and would reach 1 (use 'cosine', or respace a longer process)"
            )
        scale = 1000 / steps
        return np.linspace(scale * 1e-4, scale * 0.02, steps, dtype=np.float64)
    if name == "cosine":
        return betas_from_alpha_bar(steps, lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2)
    raise ValueError(f"unknown beta schedule {name!r}; valid schedules: {', '.join(SCHEDULES)}")


def betas_from_alpha_bar(steps: int, alpha_bar: Callable[[float], float], max_beta: float = 0.999) -> np.ndarray:
    """Discretise a continuous alpha_bar(t), t in [0, 1], into `steps` betas.

    Betas are capped at `max_beta` because alpha_bar reaches 0 at t = 1, where the last beta would be 1
    and the reverse process singular.
    """
    betas = []
    for i in range(steps):
        t1, t2 = i / steps, (i + 1) / steps
        betas.append(min(1 - alpha_bar(t2) / alpha_bar(t1), max_beta))
    return np.array(betas, dtype=np.float64)
