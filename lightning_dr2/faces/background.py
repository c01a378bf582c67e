"""Background upsamplers by name (`faces.background`): what fills the photo behind the pasted faces when the
output is upscaled (`faces.upscale` > 1). `bicubic`, or an image upsampler of the restoration-network registry
(`realesrgan_x2plus`, `realesrgan_x4plus`: entries with `upscale` > 1) loaded from its released file."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch import nn

from lightning_dr2.faces.paste import BackgroundUpsampler, bicubic_upsampler
from lightning_dr2.nets.restorers import RESTORERS

BICUBIC = "bicubic"
BACKGROUNDS = (BICUBIC, *(name for name, spec in RESTORERS.items() if spec.upscale > 1))


@dataclass
class Background:
    """A loaded background upsampler: what identifies it in a fingerprint (its weight file's sha256) and its
    network (None: bicubic), loaded on the CPU and moved to a device when it is used."""

    identity: str
    net: nn.Module | None = None

    def upsampler(self, device: str | torch.device = "cpu") -> BackgroundUpsampler:
        return bicubic_upsampler if self.net is None else network_upsampler(self.net.to(device), device)


def network_upsampler(net: nn.Module, device: str | torch.device = "cpu") -> BackgroundUpsampler:
    """A BackgroundUpsampler over a registry upsampler ((B, 3, H, W) in [-1, 1] -> x `net.scale`): at scale 1
    the photo itself (the background keeps its bytes, as with bicubic); another scale than the network's is
    reached by resizing its output (area when shrinking, bicubic when enlarging)."""
    from lightning_dr2.image_io import image_to_tensor, to_uint8_images

    def run(image: np.ndarray, scale: int) -> np.ndarray:
        if scale == 1:
            return image
        with torch.no_grad():
            out = to_uint8_images(net(image_to_tensor(image)[None].to(device)))[0]
        h, w = image.shape[:2]
        if out.shape[:2] != (h * scale, w * scale):
            shrink = out.shape[0] > h * scale
            out = cv2.resize(out, (w * scale, h * scale), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
        return out

    return run


def load_background(name: str, weights_dir: str | None = None) -> Background:
    """The upsampler called `name` (one of BACKGROUNDS), on the CPU; a network's released file is looked up through
    the weights lookup (a missing one: MissingWeightsError naming the file and `weights --fetch`)."""
    if name == BICUBIC:
        return Background(BICUBIC)
    if name not in BACKGROUNDS:
        raise ValueError(f"unknown background upsampler {name!r}; choose one of {list(BACKGROUNDS)}")
    from lightning_dr2.exports.restorer import load_restorer

    loaded = load_restorer(name, weights_dir=weights_dir)
    assert loaded is not None
    return Background(f"{name}:{loaded.sha256}", loaded.module)
