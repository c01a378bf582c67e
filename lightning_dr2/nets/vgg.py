"""VGG19 feature slices for the perceptual loss of the SPARNetHD recipe.

torchvision's `vgg19().features[:35]` cut into the five slices 0:3, 3:8, 8:17, 17:26, 26:35 (up to
relu1_1, relu2_1, relu3_1, relu4_1, relu5_1 with their pooling); inputs in [-1, 1] are mapped to
[0, 1] and ImageNet-normalised inside. Frozen: only the generator learns through it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn
from torchvision.models import vgg as tv_vgg

from lightning_dr2.nets.loading import load_into, read_state_dict

VGG19_FILE = "vgg19-dcbb9e9d.pth"  # torchvision IMAGENET1K_V1 weights, found through the weights registry
SLICES = ((0, 3), (3, 8), (8, 17), (17, 26), (26, 35))
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


class VGG19Features(nn.Module):
    """`forward(x)` -> the five slice outputs for x in [-1, 1]; `weights=None` keeps random weights (tests)."""

    def __init__(self, weights: str | Path | None = None) -> None:
        super().__init__()
        features = tv_vgg.make_layers(tv_vgg.cfgs["E"])[: SLICES[-1][1]]
        if weights is not None:
            state = read_state_dict(weights)
            load_into(features, _features_only(state), weights)
        self.slices = nn.ModuleList(features[a:b] for a, b in SLICES)
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False).eval()

    def train(self, mode: bool = True) -> VGG19Features:
        return super().train(False)  # frozen: always eval

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = ((x + 1) / 2 - self.mean) / self.std
        out = []
        for block in self.slices:
            h = block(h)
            out.append(h)
        return out


def _features_only(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The `features.<i>.*` entries of a torchvision VGG19 state dict for layers < 35, renamed `<i>.*`."""
    out = {}
    for key, value in state.items():
        if key.startswith("features."):
            index = int(key.split(".")[1])
            if index < SLICES[-1][1]:
                out[key[len("features.") :]] = value
    return out
