"""The DR2 degradation remover: diffuse the degraded face, denoise while steering its low frequencies.

Algorithm (Wang et al., CVPR 2023; the official `dr2e.py` loop, batched here):
  x_omega = q_sample(y, omega)
  for i = omega, omega-1, ..., tau:
      out = p_sample(x, i)
      if i == tau: return out.pred_xstart          (clipped x0 estimate)
      x = out.sample - Phi_N(out.sample) + Phi_N(q_sample(y, i-1))   (N == 1: x = q_sample(y, i-1))
on the respaced (default 100-step) grid of the process the UNet was trained with (`DR2.diffusion_config`);
tau and omega index the respaced grid while the UNet receives the original step. Every Gaussian draw
goes through one `noise(like)` callable, so tests can pin it (zeros) and per-image generators make each
image independent of its batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor, nn

from lightning_dr2.diffusion import PUBLISHED_DIFFUSION, DiffusionConfig, build_diffusion
from lightning_dr2.diffusion.noise import PerImageNoise
from lightning_dr2.dr2.lowpass import lowpass

NoiseFn = Callable[[Tensor], Tensor]

# The official rule: how far above tau to start, by downsampling factor N.
_OMEGA_OFFSETS = ((1, 5), (2, 10), (4, 20), (8, 25))
_OMEGA_OFFSET_ELSE = 30


def _learns_sigma(unet: nn.Module, diffusion: DiffusionConfig) -> bool:
    """A UNet with twice its input channels out predicts a variance too; modules that do not say
    (test doubles) follow the config, else the published learned sigma."""
    out_channels = getattr(unet, "out_channels", None)
    if out_channels is None:
        return PUBLISHED_DIFFUSION.learn_sigma if diffusion.learn_sigma is None else diffusion.learn_sigma
    return out_channels == 2 * getattr(unet, "in_channels", 3)


def default_omega(N: int, tau: int, num_steps: int = 100) -> int:  # noqa: N803 (the paper's name)
    """omega = tau + {N=1: 5, N=2: 10, N<=4: 20, N<=8: 25, else 30}, capped at the last respaced index.

    The official code caps at 100, which indexes past the 100-step grid (0..99); we cap at
    `num_steps - 1`.
    """
    offset = next((off for limit, off in _OMEGA_OFFSETS if N <= limit), _OMEGA_OFFSET_ELSE)
    return min(tau + offset, num_steps - 1)


class SettingError(ValueError):
    """A DR2 setting outside its meaningful range. `name` is the setting, so a config can name its own key."""

    def __init__(self, name: str, value: Any, reason: str) -> None:
        super().__init__(f"{name}={value!r} {reason}")
        self.name, self.value, self.reason = name, value, reason


SAMPLERS = ("ddpm", "ddim")


def check_sampler(sampler: str, eta: float) -> None:
    """The sampler and its eta: eta < 0 or > 1 gives a negative or excess noise variance (black or noisy images)."""
    if sampler not in SAMPLERS:
        raise SettingError("sampler", sampler, f"is not one of {list(SAMPLERS)}")
    if not 0.0 <= float(eta) <= 1.0:
        raise SettingError("eta", eta, "must be in [0, 1] (0: deterministic DDIM, 1: DDPM-like noise)")


def check_indices(N: int, tau: int, omega: int | None, num_steps: int) -> int:  # noqa: N803
    """N, tau and omega (None: the official rule) against a respaced grid of `num_steps`; returns omega.

    Whether N divides the image size is checked with the image (`DR2.validate`).
    """
    if not isinstance(N, int) or isinstance(N, bool) or N < 1:
        raise SettingError("N", N, "must be a positive integer (the downsampling factor of Phi_N, e.g. 4, 8, 16)")
    if not isinstance(tau, int) or isinstance(tau, bool) or not 0 <= tau < num_steps - 1:
        grid = f"the respaced grid is 0..{num_steps - 1}"
        raise SettingError("tau", tau, f"must be an integer in [0, {num_steps - 2}] ({grid})")
    resolved = default_omega(N, tau, num_steps) if omega is None else omega
    if not isinstance(resolved, int) or isinstance(resolved, bool) or resolved <= tau:
        raise SettingError("omega", resolved, f"must be greater than tau ({tau}): DR2 denoises from omega down to tau")
    if resolved >= num_steps:
        raise SettingError("omega", resolved, f"is beyond the respaced grid 0..{num_steps - 1}; lower tau or omega")
    return resolved


@dataclass
class DR2Output:
    """x0_hat and, on request, the per-step trajectory of x0 estimates (omega..tau)."""

    x0: Tensor
    trajectory: list[Tensor] | None = None


class DR2:
    """`DR2(unet)(y, N, tau)` -> x0_hat, for a batch of degraded faces y in [-1, 1].

    The process: `diffusion` (a `DiffusionConfig`, e.g. from an exported UNet's sidecar; default: the
    published linear 1000-step eps process).
    learn_sigma follows the UNet's output channels. `dr2.diffusion_config` is the process it runs,
    `respacing` the length of the grid tau and omega index.
    sampler: "ddpm" (the official ancestral steps) or "ddim" (deterministic for eta=0, a faster
    variant when combined with a coarser `respacing`; tau/omega always index the respaced grid).
    dtype: run the UNet under autocast in this dtype (e.g. torch.bfloat16 on GPU); the diffusion
    arithmetic and Phi_N stay in fp32.
    """

    def __init__(
        self,
        unet: nn.Module,
        respacing: int = 100,
        sampler: str = "ddpm",
        eta: float = 0.0,
        dtype: torch.dtype | None = None,
        diffusion: DiffusionConfig | None = None,
    ) -> None:
        check_sampler(sampler, eta)
        if diffusion is None:
            diffusion = replace(PUBLISHED_DIFFUSION, learn_sigma=None)
        self.unet = unet
        self.respacing = int(respacing)
        self.diffusion_config = diffusion.for_network(_learns_sigma(unet, diffusion), "the UNet's learn_sigma")
        self.diffusion = build_diffusion(self.diffusion_config, respacing=[self.respacing])
        self.sampler = sampler
        self.eta = eta
        self.dtype = dtype
        self.image_size = getattr(unet, "image_size", None)

    @property
    def num_steps(self) -> int:
        return self.diffusion.num_timesteps

    def resolve_omega(self, N: int, tau: int, omega: int | None) -> int:  # noqa: N803
        return default_omega(N, tau, self.num_steps) if omega is None else int(omega)

    def unet_calls(self, N: int, tau: int, omega: int | None = None) -> int:  # noqa: N803
        """UNet evaluations per image: omega - tau + 1."""
        return self.resolve_omega(N, tau, omega) - tau + 1

    def _model(self, x: Tensor, t: Tensor) -> Tensor:
        if self.dtype is None or self.dtype == torch.float32:
            return self.unet(x, t)
        with torch.autocast(x.device.type, dtype=self.dtype):
            return self.unet(x, t).float()

    def check_setting(self, N: int, tau: int, omega: int | None, image_size: int) -> int:  # noqa: N803
        """Fail before any image is read: (N, tau, omega) against the respaced grid and N against the UNet's
        `image_size`, as `run` would check them; returns omega (None: the official rule)."""
        self.validate(torch.zeros(1, 3, image_size, image_size), N, tau, omega)
        return self.resolve_omega(N, tau, omega)

    def validate(self, y: Tensor, N: int, tau: int, omega: int | None) -> None:  # noqa: N803
        if not isinstance(y, Tensor) or y.ndim != 4 or y.shape[1] != 3:
            shape = tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__
            raise ValueError(f"DR2 expects a batch of RGB images shaped (B, 3, H, W); got {shape}")
        if self.image_size is not None and tuple(y.shape[-2:]) != (self.image_size, self.image_size):
            raise ValueError(
                f"input is {y.shape[-2]}x{y.shape[-1]} but the UNet works at {self.image_size}x{self.image_size}: "
                "resize the faces first (the pipeline does this with bicubic antialiasing)"
            )
        lo, hi = float(y.min()), float(y.max())
        if lo < -1.001 or hi > 1.001:
            raise ValueError(
                f"input values must lie in [-1, 1]; got range [{lo:.3f}, {hi:.3f}] "
                "(did you pass [0, 255] or [0, 1] images?)"
            )
        check_indices(N, tau, omega, self.num_steps)
        if y.shape[-1] % N or y.shape[-2] % N:
            raise ValueError(f"N={N} must divide the image size {y.shape[-2]}x{y.shape[-1]}")

    def _noise_fn(
        self, y: Tensor, noise: NoiseFn | None, generator: torch.Generator | None, seeds: Sequence[int] | None
    ) -> NoiseFn:
        if noise is not None:
            return noise
        if seeds is not None:
            if len(seeds) != y.shape[0]:
                raise ValueError(f"got {len(seeds)} seeds for a batch of {y.shape[0]} images")
            return PerImageNoise(seeds, y.device)
        return lambda like: torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)

    def _q_sample(self, y: Tensor, i: int, noise: NoiseFn) -> Tensor:
        t = torch.full((y.shape[0],), i, device=y.device, dtype=torch.long)
        return self.diffusion.q_sample(y, t, noise=noise(y))

    @torch.no_grad()
    def run(
        self,
        y: Tensor,
        N: int,  # noqa: N803
        tau: int,
        omega: int | None = None,
        noise: NoiseFn | None = None,
        generator: torch.Generator | None = None,
        seeds: Sequence[int] | None = None,
        return_trajectory: bool = False,
    ) -> DR2Output:
        """The DR2 loop; see the module docstring. Returns x0_hat (and the trajectory if asked)."""
        omega = self.resolve_omega(N, tau, omega)
        self.validate(y, N, tau, omega)
        y = y.float()
        draw = self._noise_fn(y, noise, generator, seeds)
        trajectory: list[Tensor] | None = [] if return_trajectory else None
        x = self._q_sample(y, omega, draw)
        for i in range(omega, tau - 1, -1):
            t = torch.full((y.shape[0],), i, device=y.device, dtype=torch.long)
            if self.sampler == "ddim":
                out = self.diffusion.ddim_sample(self._model, x, t, eta=self.eta, noise=draw(x))
            else:
                out = self.diffusion.p_sample(self._model, x, t, noise=draw(x))
            if trajectory is not None:
                trajectory.append(out["pred_xstart"])
            if i == tau:
                return DR2Output(out["pred_xstart"], trajectory)
            guide = self._q_sample(y, i - 1, draw)
            if N == 1:
                x = guide
            else:
                sample = out["sample"]
                x = sample - lowpass(sample, N) + lowpass(guide, N)
        raise AssertionError("unreachable: the loop always returns at i == tau")

    def __call__(self, y: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        """x0_hat alone: `run`'s arguments (N, tau, omega, noise, generator, seeds)."""
        return self.run(y, *args, **kwargs).x0

    @torch.no_grad()
    def by_setting(self, y: Tensor, settings: Sequence[tuple[int, int, int | None]], seeds: Sequence[int]) -> Tensor:
        """x0_hat (clamped to [-1, 1]) of a batch whose rows each have their own (N, tau, omega) and seed.

        One DR2 loop runs per distinct setting (the loop's grid is shared by a call); per-image seeds keep
        each row's result independent of which rows share its call.
        """
        out = torch.empty_like(y, dtype=torch.float32)
        for key in dict.fromkeys(settings):
            rows = [i for i, s in enumerate(settings) if s == key]
            out[rows] = self(y[rows], *key, seeds=[int(seeds[i]) for i in rows]).clamp(-1, 1)
        return out

    @torch.no_grad()
    def sample_k(
        self,
        y: Tensor,
        N: int,  # noqa: N803
        tau: int,
        k: int,
        omega: int | None = None,
        seeds: Sequence[int] | None = None,
        noise: NoiseFn | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """K stochastic DR2 samples per image: (samples (B, K, 3, H, W), mean, per-pixel std).

        The paper suggests the spread of several samples as an uncertainty estimate; sample j of
        image b uses seed `seeds[b] * 1_000_003 + j` (seeds default to 0..B-1).
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        b = y.shape[0]
        base = list(range(b)) if seeds is None else list(seeds)
        rep = y.repeat_interleave(k, dim=0)
        rep_seeds = None if noise is not None else [s * 1_000_003 + j for s in base for j in range(k)]
        out = self(rep, N, tau, omega, noise=noise, seeds=rep_seeds).reshape(b, k, *y.shape[1:])
        return out, out.mean(dim=1), out.std(dim=1, unbiased=False)
