"""Timestep respacing: run a T-step model on a shorter grid of its original steps.

DR2 samples a 1000-step DDPM on 100 of its steps (`space_timesteps(1000, [100])`); tau and omega index
that shorter grid while the network still receives the original step number (`timestep_map`).
The kept steps must equal guided-diffusion's exactly, or the published settings denoise at the wrong
noise levels.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np


def space_timesteps(num_timesteps: int, section_counts: str | int | Sequence[int]) -> set[int]:
    """Pick which of `num_timesteps` original steps to keep (guided-diffusion semantics).

    `section_counts` is either "ddimN" (the evenly strided grid range(0, T, stride) with exactly N
    steps, as the DDIM paper uses), or a list of counts (or a comma string like "10,15,20", or one int)
    that splits the process into equal sections and takes that many evenly spaced steps from each,
    always including both ends of a section.
    """
    if num_timesteps < 1:
        raise ValueError(f"num_timesteps must be >= 1, got {num_timesteps}")
    if isinstance(section_counts, str):
        spec = section_counts.strip()
        if spec.startswith("ddim"):
            return _ddim_timesteps(num_timesteps, spec)
        try:
            counts = [int(part) for part in spec.split(",")]
        except ValueError:
            raise ValueError(
                f"bad respacing {section_counts!r}: expected 'ddimN' or comma-separated step counts "
                "such as '100' or '10,15,20'"
            ) from None
    elif isinstance(section_counts, int):
        counts = [section_counts]
    else:
        counts = [int(count) for count in section_counts]

    if not counts or any(count < 0 for count in counts) or sum(counts) == 0:
        raise ValueError(f"bad respacing {section_counts!r}: step counts must be >= 0 and not all zero")

    base_size, extra = divmod(num_timesteps, len(counts))
    kept: set[int] = set()
    start = 0
    for i, count in enumerate(counts):
        size = base_size + (1 if i < extra else 0)
        if count > size:
            raise ValueError(
                f"cannot take {count} steps from section {i} of {size} steps "
                f"({num_timesteps} steps split into {len(counts)} sections)"
            )
        stride = 1.0 if count <= 1 else (size - 1) / (count - 1)
        position = 0.0
        for _ in range(count):
            # Python's round (half to even) and the accumulated float stride reproduce guided-diffusion.
            kept.add(start + round(position))
            position += stride
        start += size
    return kept


def _ddim_timesteps(num_timesteps: int, spec: str) -> set[int]:
    try:
        desired = int(spec[len("ddim") :])
    except ValueError:
        raise ValueError(f"bad respacing {spec!r}: expected 'ddimN' with an integer N, e.g. 'ddim25'") from None
    for stride in range(1, num_timesteps):
        steps = range(0, num_timesteps, stride)
        if len(steps) == desired:
            return set(steps)
    raise ValueError(
        f"cannot create exactly {desired} steps from {num_timesteps} with an integer stride ({spec!r}); "
        "use a section count such as "
        f"'{desired}' instead"
    )


def respace_betas(betas: np.ndarray, use_timesteps: Iterable[int]) -> tuple[np.ndarray, list[int]]:
    """Betas of the process that visits only `use_timesteps`, and the sorted kept original steps.

    The new betas keep alphas_cumprod unchanged at the kept steps (beta_i = 1 - acp_i / acp_prev), so
    q(x_t | x_0) is the same distribution and the original network applies unchanged.
    """
    betas = np.asarray(betas, dtype=np.float64)
    timestep_map = sorted({int(step) for step in use_timesteps})
    if not timestep_map:
        raise ValueError("respacing kept no timesteps")
    if timestep_map[0] < 0 or timestep_map[-1] >= len(betas):
        raise ValueError(f"kept timesteps must lie in [0, {len(betas)}), got {timestep_map[0]}..{timestep_map[-1]}")
    alphas_cumprod = np.cumprod(1.0 - betas)
    new_betas = []
    previous = 1.0
    for step in timestep_map:
        new_betas.append(1 - alphas_cumprod[step] / previous)
        previous = alphas_cumprod[step]
    return np.array(new_betas, dtype=np.float64), timestep_map
