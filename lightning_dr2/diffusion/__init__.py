"""Gaussian diffusion as plain math (config and builder, schedules, respacing, process); the network is passed in."""

from .config import PUBLISHED_DIFFUSION, DiffusionConfig, DiffusionRequest, build_diffusion
from .gaussian import GaussianDiffusion
from .losses import discretized_gaussian_log_likelihood, mean_flat, normal_kl
from .respace import respace_betas, space_timesteps
from .schedule import beta_schedule, betas_from_alpha_bar

__all__ = [
    "PUBLISHED_DIFFUSION",
    "DiffusionConfig",
    "DiffusionRequest",
    "GaussianDiffusion",
    "beta_schedule",
    "betas_from_alpha_bar",
    "build_diffusion",
    "discretized_gaussian_log_likelihood",
    "mean_flat",
    "normal_kl",
    "respace_betas",
    "space_timesteps",
]
