"""Losses of the enhancer GAN recipe (plain functions on tensors; the module only weights and logs them)."""

from lightning_dr2.losses.enhancer import (
    LossWeights,
    PerceptualLoss,
    feature_matching,
    hinge_d_losses,
    hinge_g_loss,
    l1_loss,
    load_perceptual,
    ssim_loss,
)

__all__ = [
    "LossWeights",
    "PerceptualLoss",
    "feature_matching",
    "hinge_d_losses",
    "hinge_g_loss",
    "l1_loss",
    "load_perceptual",
    "ssim_loss",
]
