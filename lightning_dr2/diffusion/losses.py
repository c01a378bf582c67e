"""Likelihood terms of the diffusion variational bound (improved-DDPM's L_vb)."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def mean_flat(x: Tensor) -> Tensor:
    """Mean over every dimension but the batch: per-example losses that sampler weights can scale."""
    return x.mean(dim=tuple(range(1, x.ndim)))


def normal_kl(mean1: Tensor | float, logvar1: Tensor | float, mean2: Tensor | float, logvar2: Tensor | float) -> Tensor:
    """Elementwise KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)) in nats; arguments broadcast.

    Log-variances (not variances) are taken because the learned variances span many orders of magnitude.
    """
    like = next((v for v in (mean1, logvar1, mean2, logvar2) if isinstance(v, Tensor)), None)
    if like is None:
        raise TypeError("normal_kl needs at least one tensor argument")
    logvar1, logvar2 = (torch.as_tensor(v, dtype=like.dtype, device=like.device) for v in (logvar1, logvar2))
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def approx_standard_normal_cdf(x: Tensor) -> Tensor:
    """Fast tanh approximation of the standard normal CDF (the one the published bpd numbers use)."""
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def discretized_gaussian_log_likelihood(x: Tensor, means: Tensor, log_scales: Tensor) -> Tensor:
    """Log-probability (nats) of 8-bit images `x` in [-1, 1] under a Gaussian discretised into 256 bins.

    This is the decoder term L_0: the probability mass of the bin of width 2/255 around each pixel,
    with the outermost bins extended to +-infinity so the masses sum to one.
    """
    if not x.shape == means.shape == log_scales.shape:
        raise ValueError(
            f"shapes differ: x {tuple(x.shape)}, means {tuple(means.shape)}, log_scales {tuple(log_scales.shape)}"
        )
    centered = x - means
    inv_std = torch.exp(-log_scales)
    cdf_plus = approx_standard_normal_cdf(inv_std * (centered + 1.0 / 255.0))
    cdf_min = approx_standard_normal_cdf(inv_std * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_cdf_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_cdf_delta))
