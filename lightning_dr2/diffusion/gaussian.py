"""Gaussian diffusion (DDPM / improved-DDPM / DDIM) as plain single-step math; the network is passed in.

This class holds the closed forms and ONE step of each sampler (`p_sample`, `ddim_sample`) and the
training losses; the loops live with the samplers that own their noise semantics (`diffusion.sampling`
for grids, `dr2.remover` for DR2). Build it from a `DiffusionConfig` with `build_diffusion`.

Numerically this follows openai guided-diffusion: schedule buffers are float64 numpy arrays, gathered
per call at the timesteps and cast to the compute dtype, so published checkpoints give the published
numbers. The compute dtype is the input's dtype promoted to at least float32: fp32/fp64 inputs get
results in their own dtype, bf16/fp16 inputs (and bf16 model outputs under autocast) get fp32 results,
so losses and the sampling chain never run in half precision.

Respacing is built in: a process made from respaced betas carries `timestep_map`, and the network is
always called with the ORIGINAL step `timestep_map[t]` (guided-diffusion's `rescale_timesteps` is not
used, as in DR2).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .losses import discretized_gaussian_log_likelihood, mean_flat, normal_kl

MEAN_TYPES = ("eps", "x0", "v")
VAR_TYPES = ("fixed_small", "fixed_large", "learned_range", "learned")
LOSS_TYPES = ("mse", "hybrid")
LEARNED_VAR_TYPES = ("learned_range", "learned")

Model = Callable[..., Tensor]


def _compute_dtype(x: Tensor) -> torch.dtype:
    return torch.promote_types(x.dtype, torch.float32)


def _step_noise(noise: Tensor | None, generator: torch.Generator | None, x: Tensor) -> Tensor:
    """The noise of one sampling step: the caller's tensor (checked against x), else drawn from `generator`."""
    if noise is None:
        return _randn_like(x, generator)
    _check_same_shape(noise, x, "noise")
    return noise


def _randn_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """Standard normal noise shaped like `x`; a generator may live on another device (e.g. CPU)."""
    if generator is None:
        return torch.randn_like(x)
    return torch.randn(x.shape, generator=generator, device=generator.device, dtype=x.dtype).to(x.device)


class GaussianDiffusion:
    """A discrete Gaussian diffusion process defined by its betas.

    model_mean_type: what the network predicts: "eps" (noise), "x0" (clean image) or "v" (velocity).
    model_var_type: "fixed_small" (posterior variance beta~_t), "fixed_large" (beta_t), "learned" (log
        variance) or "learned_range" (interpolation between the two, improved-DDPM / ADM / DR2).
        Learned types expect the network to return 2*C channels: mean part, then variance part.
    loss_type: "mse" (fixed variance) or "hybrid" (learned variance): MSE on the mean target plus the
        variational bound term with the mean detached, the vb scaled by num_timesteps / 1000. That is
        guided-diffusion's RESCALED_MSE, the default of its training scripts; for 1000 steps it is
        plain MSE + vb.
    timestep_map: the original step of each of this process's steps (identity unless respaced).
    """

    def __init__(
        self,
        betas: np.ndarray | Sequence[float],
        *,
        model_mean_type: str = "eps",
        model_var_type: str = "learned_range",
        loss_type: str = "hybrid",
        timestep_map: Sequence[int] | None = None,
    ) -> None:
        betas = np.asarray(betas, dtype=np.float64)
        if betas.ndim != 1 or len(betas) < 2:
            raise ValueError(f"betas must be a 1-D array of at least 2 steps, got shape {betas.shape}")
        if not ((betas > 0).all() and (betas < 1).all()):
            raise ValueError("betas must lie in (0, 1): a beta of 1 destroys the signal and the reverse step")
        _check_choice("model_mean_type", model_mean_type, MEAN_TYPES)
        _check_choice("model_var_type", model_var_type, VAR_TYPES)
        _check_choice("loss_type", loss_type, LOSS_TYPES)
        learned = model_var_type in LEARNED_VAR_TYPES
        if learned and loss_type == "mse":
            raise ValueError(
                f"model_var_type={model_var_type!r} needs loss_type='hybrid': with 'mse' nothing "
                "trains the variance channels"
            )
        if not learned and loss_type == "hybrid":
            raise ValueError(
                f"loss_type='hybrid' trains a learned variance, but model_var_type={model_var_type!r}; "
                "use loss_type='mse' or a learned variance type"
            )
        self.model_mean_type = model_mean_type
        self.model_var_type = model_var_type
        self.loss_type = loss_type
        self.learn_sigma = learned

        self.num_timesteps = len(betas)
        self.timestep_map = list(range(self.num_timesteps)) if timestep_map is None else [int(s) for s in timestep_map]
        if len(self.timestep_map) != self.num_timesteps:
            raise ValueError(f"timestep_map has {len(self.timestep_map)} entries for {self.num_timesteps} steps")

        self.betas = betas
        alphas = 1.0 - betas
        self.alphas_cumprod = np.cumprod(alphas)
        self.alphas_cumprod_prev = np.append(1.0, self.alphas_cumprod[:-1])
        self.sqrt_alphas_cumprod = np.sqrt(self.alphas_cumprod)
        self.sqrt_one_minus_alphas_cumprod = np.sqrt(1.0 - self.alphas_cumprod)
        self.log_one_minus_alphas_cumprod = np.log(1.0 - self.alphas_cumprod)
        self.sqrt_recip_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod)
        self.sqrt_recipm1_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod - 1)
        # q(x_{t-1} | x_t, x_0); its variance is 0 at t = 0, so the log is clipped to the t = 1 value.
        self.posterior_variance = betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        self.posterior_log_variance_clipped = np.log(np.append(self.posterior_variance[1], self.posterior_variance[1:]))
        self.posterior_mean_coef1 = betas * np.sqrt(self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        self.posterior_mean_coef2 = (1.0 - self.alphas_cumprod_prev) * np.sqrt(alphas) / (1.0 - self.alphas_cumprod)
        self.log_betas = np.log(betas)
        # "fixed_large" uses beta_t, with beta~_1 at t = 0 for a sensible decoder variance.
        self.large_variance = np.append(self.posterior_variance[1], betas[1:])
        self.large_log_variance = np.log(self.large_variance)
        self._device_buffers: dict[tuple[str, torch.device], Tensor] = {}

    # ------------------------------------------------------------------ buffers and model calls

    def _buffer(self, name: str, device: torch.device) -> Tensor:
        """A schedule array as a tensor on `device`, cached so sampling does no host copies per step."""
        key = (name, device)
        if key not in self._device_buffers:
            if name == "timestep_map":
                tensor = torch.tensor(self.timestep_map, dtype=torch.long)
            else:  # MPS has no float64; everything else keeps full precision until the per-call cast.
                tensor = torch.from_numpy(getattr(self, name))
                tensor = tensor.float() if device.type == "mps" else tensor
            self._device_buffers[key] = tensor.to(device)
        return self._device_buffers[key]

    def _extract(self, name: str, t: Tensor, like: Tensor) -> Tensor:
        """Gather schedule values at `t` (shape (B,)) and shape them (B, 1, ...) to broadcast with `like`."""
        values = self._buffer(name, like.device)[t.to(like.device)].to(_compute_dtype(like))
        return values.view(-1, *([1] * (like.ndim - 1)))

    def model_timesteps(self, t: Tensor) -> Tensor:
        """The original-process steps the network is conditioned on for this process's steps `t`."""
        return self._buffer("timestep_map", t.device)[t]

    def _run_model(self, model: Model, x: Tensor, t: Tensor, model_kwargs: dict[str, Any] | None) -> Tensor:
        output = model(x, self.model_timesteps(t), **(model_kwargs or {}))
        channels = x.shape[1] * (2 if self.learn_sigma else 1)
        if output.shape[0] != x.shape[0] or output.shape[1] != channels or output.shape[2:] != x.shape[2:]:
            raise ValueError(
                f"model returned shape {tuple(output.shape)} for input {tuple(x.shape)}; "
                f"model_var_type={self.model_var_type!r} expects {channels} channels"
            )
        return output.to(_compute_dtype(x))  # bf16 under autocast: keep the diffusion math in fp32

    # ------------------------------------------------------------------ forward process

    def q_mean_variance(self, x_start: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Mean, variance and log variance of q(x_t | x_0)."""
        mean = self._extract("sqrt_alphas_cumprod", t, x_start) * x_start
        variance = (1.0 - self._extract("alphas_cumprod", t, x_start)).expand_as(x_start)
        log_variance = self._extract("log_one_minus_alphas_cumprod", t, x_start).expand_as(x_start)
        return mean, variance, log_variance

    def q_sample(
        self,
        x_start: Tensor,
        t: Tensor,
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Draw x_t ~ q(x_t | x_0) = sqrt(acp_t) x_0 + sqrt(1 - acp_t) noise."""
        if noise is None:
            noise = _randn_like(x_start, generator)
        _check_same_shape(noise, x_start, "noise")
        return (
            self._extract("sqrt_alphas_cumprod", t, x_start) * x_start
            + self._extract("sqrt_one_minus_alphas_cumprod", t, x_start) * noise
        )

    def q_posterior_mean_variance(self, x_start: Tensor, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Mean, variance and clipped log variance of the posterior q(x_{t-1} | x_t, x_0)."""
        _check_same_shape(x_start, x_t, "x_start")
        mean = (
            self._extract("posterior_mean_coef1", t, x_t) * x_start
            + self._extract("posterior_mean_coef2", t, x_t) * x_t
        )
        variance = self._extract("posterior_variance", t, x_t).expand_as(x_t)
        log_variance = self._extract("posterior_log_variance_clipped", t, x_t).expand_as(x_t)
        return mean, variance, log_variance

    # ------------------------------------------------------------------ reverse process

    def _predict_xstart(self, mean_output: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        if self.model_mean_type == "eps":
            return (
                self._extract("sqrt_recip_alphas_cumprod", t, x_t) * x_t
                - self._extract("sqrt_recipm1_alphas_cumprod", t, x_t) * mean_output
            )
        if self.model_mean_type == "v":
            return (
                self._extract("sqrt_alphas_cumprod", t, x_t) * x_t
                - self._extract("sqrt_one_minus_alphas_cumprod", t, x_t) * mean_output
            )
        return mean_output

    def _predict_eps_from_xstart(self, x_t: Tensor, t: Tensor, pred_xstart: Tensor) -> Tensor:
        return (self._extract("sqrt_recip_alphas_cumprod", t, x_t) * x_t - pred_xstart) / self._extract(
            "sqrt_recipm1_alphas_cumprod", t, x_t
        )

    def _mean_variance_from_output(
        self,
        output: Tensor,
        x: Tensor,
        t: Tensor,
        clip_denoised: bool,
        denoised_fn: Callable[[Tensor], Tensor] | None,
    ) -> dict[str, Tensor]:
        """p(x_{t-1} | x_t) from an already computed network output (training passes a detached mean)."""
        if self.learn_sigma:
            mean_output, var_output = output.split(x.shape[1], dim=1)
            if self.model_var_type == "learned":
                log_variance = var_output
            else:
                # The network outputs v in [-1, 1]: log-space interpolation of beta~_t (min) and beta_t (max).
                min_log = self._extract("posterior_log_variance_clipped", t, x)
                max_log = self._extract("log_betas", t, x)
                frac = (var_output + 1) / 2
                log_variance = frac * max_log + (1 - frac) * min_log
            variance = torch.exp(log_variance)
        else:
            mean_output = output
            small = self.model_var_type == "fixed_small"
            variance = self._extract("posterior_variance" if small else "large_variance", t, x).expand_as(x)
            log_variance = self._extract(
                "posterior_log_variance_clipped" if small else "large_log_variance", t, x
            ).expand_as(x)

        pred_xstart = self._predict_xstart(mean_output, x, t)
        if denoised_fn is not None:
            pred_xstart = denoised_fn(pred_xstart)
        if clip_denoised:
            pred_xstart = pred_xstart.clamp(-1, 1)
        mean, _, _ = self.q_posterior_mean_variance(pred_xstart, x, t)
        return {
            "mean": mean,
            "variance": variance,
            "log_variance": log_variance,
            "pred_xstart": pred_xstart,
            "model_output": mean_output,
        }

    def p_mean_variance(
        self,
        model: Model,
        x: Tensor,
        t: Tensor,
        clip_denoised: bool = True,
        denoised_fn: Callable[[Tensor], Tensor] | None = None,
        model_kwargs: dict[str, Any] | None = None,
    ) -> dict[str, Tensor]:
        """Apply the network to get p(x_{t-1} | x_t): dict of mean, variance, log_variance, pred_xstart
        (after `denoised_fn` and clipping to [-1, 1]) and model_output (the mean part of the output)."""
        output = self._run_model(model, x, t, model_kwargs)
        return self._mean_variance_from_output(output, x, t, clip_denoised, denoised_fn)

    def p_sample(
        self,
        model: Model,
        x: Tensor,
        t: Tensor,
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
        clip_denoised: bool = True,
        denoised_fn: Callable[[Tensor], Tensor] | None = None,
        model_kwargs: dict[str, Any] | None = None,
    ) -> dict[str, Tensor]:
        """One ancestral step x_t -> x_{t-1}; no noise is added where t == 0.

        `noise` (a tensor) wins over drawing from `generator`, so callers such as the DR2 sampler can
        inject their own draws. Returns p_mean_variance's dict plus "sample".
        """
        out = self.p_mean_variance(model, x, t, clip_denoised, denoised_fn, model_kwargs)
        noise = _step_noise(noise, generator, x)
        nonzero = (t != 0).to(out["mean"].dtype).view(-1, *([1] * (x.ndim - 1)))
        sample = out["mean"] + nonzero * torch.exp(0.5 * out["log_variance"]) * noise
        return {"sample": sample, **out}

    def ddim_sample(
        self,
        model: Model,
        x: Tensor,
        t: Tensor,
        eta: float = 0.0,
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
        **mean_options: Any,
    ) -> dict[str, Tensor]:
        """One DDIM step x_t -> x_{t-1} on this process's grid (eta = 0: deterministic; eta = 1: DDPM-like).

        The noise estimate is recomputed from the (clipped) pred_xstart, as guided-diffusion does. `noise` and
        `generator` as in `p_sample`; `mean_options` go to `p_mean_variance` (clip_denoised, denoised_fn,
        model_kwargs).
        """
        out = self.p_mean_variance(model, x, t, **mean_options)
        eps = self._predict_eps_from_xstart(x, t, out["pred_xstart"])
        alpha_bar = self._extract("alphas_cumprod", t, x)
        alpha_bar_prev = self._extract("alphas_cumprod_prev", t, x)
        sigma = eta * torch.sqrt((1 - alpha_bar_prev) / (1 - alpha_bar)) * torch.sqrt(1 - alpha_bar / alpha_bar_prev)
        noise = _step_noise(noise, generator, x)
        mean_pred = out["pred_xstart"] * torch.sqrt(alpha_bar_prev) + torch.sqrt(1 - alpha_bar_prev - sigma**2) * eps
        nonzero = (t != 0).to(mean_pred.dtype).view(-1, *([1] * (x.ndim - 1)))
        return {"sample": mean_pred + nonzero * sigma * noise, **out}

    # ------------------------------------------------------------------ training and likelihood

    def sample_timesteps(
        self, batch_size: int, device: torch.device | str, generator: torch.Generator | None = None
    ) -> Tensor:
        """Uniform training timesteps in [0, num_timesteps) (drawn on the generator's device if given)."""
        draw_device = generator.device if generator is not None else device
        return torch.randint(0, self.num_timesteps, (batch_size,), generator=generator, device=draw_device).to(device)

    def _vb_terms_bpd(
        self, output: Tensor, x_start: Tensor, x_t: Tensor, t: Tensor, clip_denoised: bool
    ) -> dict[str, Tensor]:
        """Per-example L_t in bits per dim: KL to the true posterior, or the decoder NLL at t == 0."""
        true_mean, _, true_log_variance = self.q_posterior_mean_variance(x_start, x_t, t)
        out = self._mean_variance_from_output(output, x_t, t, clip_denoised, None)
        kl = normal_kl(true_mean, true_log_variance, out["mean"], out["log_variance"])
        log_likelihood = discretized_gaussian_log_likelihood(
            x_start.to(out["mean"].dtype), means=out["mean"], log_scales=0.5 * out["log_variance"]
        )
        kl, decoder_nll = mean_flat(kl) / math.log(2.0), -mean_flat(log_likelihood) / math.log(2.0)
        return {"output": torch.where(t == 0, decoder_nll, kl), "pred_xstart": out["pred_xstart"]}

    def training_losses(
        self,
        model: Model,
        x_start: Tensor,
        t: Tensor,
        noise: Tensor | None = None,
        model_kwargs: dict[str, Any] | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, Tensor]:
        """Per-example training losses: "loss", "mse" and, for learned variance, "vb" (all >= fp32).

        With a learned variance the vb term sees the mean output detached, so it trains only the
        variance channels while MSE trains the mean (improved-DDPM's L_hybrid).
        """
        if noise is None:
            noise = _randn_like(x_start, generator)
        x_t = self.q_sample(x_start, t, noise)
        output = self._run_model(model, x_t, t, model_kwargs)
        dtype = output.dtype
        if self.model_mean_type == "eps":
            target = noise.to(dtype)
        elif self.model_mean_type == "x0":
            target = x_start.to(dtype)
        else:
            target = (
                self._extract("sqrt_alphas_cumprod", t, x_start) * noise
                - self._extract("sqrt_one_minus_alphas_cumprod", t, x_start) * x_start
            )
        mean_output = output[:, : x_start.shape[1]]
        terms = {"mse": mean_flat((target - mean_output) ** 2)}
        if self.learn_sigma:
            frozen = torch.cat([mean_output.detach(), output[:, x_start.shape[1] :]], dim=1)
            vb = self._vb_terms_bpd(frozen, x_start, x_t, t, clip_denoised=False)["output"]
            terms["vb"] = vb * (self.num_timesteps / 1000.0)
            terms["loss"] = terms["mse"] + terms["vb"]
        else:
            terms["loss"] = terms["mse"]
        return terms


def _check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; valid: {', '.join(choices)}")


def _check_same_shape(tensor: Tensor, like: Tensor, name: str) -> None:
    if tensor.shape != like.shape:
        raise ValueError(f"{name} has shape {tuple(tensor.shape)}, expected {tuple(like.shape)}")
