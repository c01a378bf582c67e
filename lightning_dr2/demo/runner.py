"""A demo method's networks, loaded once, run on aligned face crops with the N and tau of each request."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from lightning_dr2.demo.models import DemoMethod
from lightning_dr2.dr2.pipeline import DR2E
from lightning_dr2.exports import load_restorer
from lightning_dr2.image_io import images_to_tensor, to_uint8_images
from lightning_dr2.nets.restorers import RESTORERS, native_size


@dataclass
class Restored:
    """Per crop: the DR2 output (None for a baseline) and the restored face, uint8 RGB."""

    dr2: list[np.ndarray] | None
    restored: list[np.ndarray]


@dataclass
class LoadedMethod:
    """The networks of one `DemoMethod`: a DR2E (DR2 + enhancer) or a restoration network alone."""

    method: DemoMethod
    pipe: DR2E | None = None
    network: nn.Module | None = None

    @property
    def crop_size(self) -> int:
        """The aligned-crop size it is fed: the enhancer's size after DR2 (DR2E resizes down to the UNet), or
        the baseline's native size (run as its own inference script feeds an aligned face)."""
        if self.pipe is not None:
            return self.pipe.enhancer_size if self.pipe.enhancer is not None else self.pipe.image_size
        return native_size(self.network)

    @property
    def device(self) -> torch.device:
        net = self.pipe.unet if self.pipe is not None else self.network
        return next(net.parameters()).device

    def setting(self, N: int, tau: int) -> DR2E:  # noqa: N803
        """The pipeline with these settings, checked as the CLI checks them (`DR2.check_setting`, through
        DR2E's constructor): a SettingError names the bad value. The networks are shared, not copied."""
        assert self.pipe is not None, "a baseline has no DR2 settings"
        pipe = self.pipe
        return DR2E(
            pipe.unet,
            pipe.enhancer,
            N=N,
            tau=tau,
            respacing=pipe.dr2.respacing,
            diffusion=pipe.dr2.diffusion_config,
            enhancer_size=self.crop_size,
        )

    @torch.no_grad()
    def run(self, crops: list[np.ndarray], setting: DR2E | None = None) -> Restored:
        """Restore aligned `crops` (crop_size, uint8 RGB) with `setting` (from `setting(N, tau)`; None for a
        baseline); per-face seeds 0..n-1, so a result repeats."""
        x = images_to_tensor(crops).to(self.device)
        seeds = list(range(len(crops)))
        if self.pipe is not None:
            assert setting is not None, "DR2 needs its (N, tau): pass setting(N, tau)"
            out = setting.restore_tensors(x, seeds=seeds)
            return Restored(to_uint8_images(out["dr2"]), to_uint8_images(out["output"]))
        noisy = RESTORERS[self.method.network].draws_noise  # StyleGAN2 noise, drawn per image from its seed
        y = self.network(x, seeds=seeds) if noisy else self.network(x)
        return Restored(None, to_uint8_images(y.clamp(-1, 1)))


def load_method(method: DemoMethod, device: str | torch.device = "cpu") -> LoadedMethod:
    """Load the files `method` names (errors name the file and what to do, as everywhere)."""
    if not method.is_dr2:
        loaded = load_restorer(method.network, None if method.weights is None else str(method.weights))
        return LoadedMethod(method, network=loaded.module.to(device))
    weights = None if method.weights is None else str(method.weights)
    # DR2 alone (no enhancer) is shown at the UNet's size: `crop_size` and `setting` skip the bicubic upscaling.
    pipe = DR2E.from_weights(method.unet, enhancer=method.network, enhancer_weights=weights, device=device)
    return LoadedMethod(method, pipe=pipe)
