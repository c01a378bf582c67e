"""The four losses of the SPARNetHD recipe: L1 pixel, VGG19 perceptual, feature matching, hinge GAN (+ our SSIM).

Discriminator outputs are lists (one per scale) of feature lists whose last entry is the score map
(`nets.discriminator.MultiScaleDiscriminator`). Scales are averaged; within a scale, feature-matching
terms are summed over layers. All losses are computed in fp32 (bf16 activations are upcast).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F  # noqa: N812

from lightning_dr2.nets.vgg import VGG19_FILE, VGG19Features

Scales = Sequence[Sequence[Tensor]]


@dataclass(frozen=True)
class LossWeights:
    """Generator loss weights; the defaults are the SPARNetHD recipe's (L1 x100, VGG x1, FM x10, GAN x1)."""

    l1: float = 100.0
    vgg: float = 1.0
    fm: float = 10.0
    gan: float = 1.0
    ssim: float = 0.0  # ours, not the recipe's: the 1 - SSIM term (`ssim_loss`)


def l1_loss(fake: Tensor, real: Tensor) -> Tensor:
    return F.l1_loss(fake.float(), real.float())


def ssim_loss(fake: Tensor, real: Tensor) -> Tensor:
    """1 - SSIM (torchmetrics' Gaussian 11x11 window, sigma 1.5) of images in [-1, 1]. Not in SPARNetHD's recipe:
    an L1-only residual enhancer smooths the local structure SSIM scores, and this term asks for it directly."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    to_unit = ((t.float() + 1) / 2 for t in (fake, real))
    return 1 - structural_similarity_index_measure(*to_unit, data_range=1.0)


def hinge_d_losses(real: Scales, fake: Scales) -> tuple[Tensor, Tensor]:
    """(mean relu(1 - D(x)), mean relu(1 + D(G(y)))) over the score maps, averaged over scales."""
    d_real = torch.stack([F.relu(1 - s[-1].float()).mean() for s in real]).mean()
    d_fake = torch.stack([F.relu(1 + s[-1].float()).mean() for s in fake]).mean()
    return d_real, d_fake


def hinge_g_loss(fake: Scales) -> Tensor:
    """-mean D(G(y)) over the score maps, averaged over scales."""
    return -torch.stack([s[-1].float().mean() for s in fake]).mean()


def feature_matching(fake: Scales, real: Scales) -> Tensor:
    """L1 between D's intermediate features of G(y) and of x (x's detached), summed over layers, mean over scales."""
    per_scale = [
        sum(F.l1_loss(f.float(), r.detach().float()) for f, r in zip(fs[:-1], rs[:-1], strict=True))
        for fs, rs in zip(fake, real, strict=True)
    ]
    return torch.stack(per_scale).mean()


class PerceptualLoss(nn.Module):
    """Sum over the five VGG19 slices of L1(features(G(y)), features(x)) (x's features detached)."""

    def __init__(self, features: VGG19Features) -> None:
        super().__init__()
        self.features = features

    def forward(self, fake: Tensor, real: Tensor) -> Tensor:
        fake_feats = self.features(fake.float())
        with torch.no_grad():
            real_feats = self.features(real.float())
        return sum(F.l1_loss(f, r) for f, r in zip(fake_feats, real_feats, strict=True))


def load_perceptual(weights: str | None, weights_dir: str | None = None) -> PerceptualLoss:
    """`weights`: None = torchvision's vgg19-dcbb9e9d.pth through the weights registry (a missing file is an
    error naming it and how to fetch it), a path, or "random" (tests and the tiny recipe only)."""
    if weights == "random":
        return PerceptualLoss(VGG19Features(None))
    from lightning_dr2.exports.locate import locate_weights

    return PerceptualLoss(VGG19Features(locate_weights(weights, VGG19_FILE, weights_dir)))
