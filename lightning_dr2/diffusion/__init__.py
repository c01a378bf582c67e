"""Gaussian diffusion as plain math: schedules, respacing, the process; the network is passed in."""

from .gaussian import GaussianDiffusion, create_diffusion
from .losses import discretized_gaussian_log_likelihood, mean_flat, normal_kl
from .respace import respace_betas, space_timesteps
from .schedule import beta_schedule, betas_from_alpha_bar

__all__ = [
    "GaussianDiffusion",
    "beta_schedule",
    "betas_from_alpha_bar",
    "create_diffusion",
    "discretized_gaussian_log_likelihood",
    "mean_flat",
    "normal_kl",
    "respace_betas",
    "space_timesteps",
]
