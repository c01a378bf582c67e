"""LPIPS (the `lpips` package, v0.1) as a torchmetrics Metric that never downloads anything.

`lpips.LPIPS(net=..., pretrained=True)` has two sets of weights:

* the small linear heads ("lin" layers), which ship inside the pip package (`lpips/weights/v0.1/*.pth`);
* the ImageNet backbone (VGG16 or AlexNet), which `lpips` gets from torchvision's model zoo, i.e. a
  download into `$TORCH_HOME/hub/checkpoints` on first use.

To keep evaluation offline and its failure explicit, we always build `lpips.LPIPS(pretrained=True,
pnet_rand=True)` (lin heads from the package, backbone built by torchvision with `weights=None`: random,
no download) and then load the backbone ourselves from a file found by `find_backbone` (i.e.
`lightning_dr2.weights.find_weight`), or raise a FileNotFoundError that names the file and how to get
it. `pretrained_backbone=False` keeps the random backbone (tests, smoke runs); its numbers are not LPIPS.

Protocol (BasicSR `scripts/metrics/calculate_lpips.py`, VQFR): images read from uint8 PNGs, mapped to
[-1, 1], `net='vgg'`, mean of per-image values. `quantize=True` (default) reproduces the PNG step.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from lightning_dr2.image_io import checked_value_range, to_uint8
from lightning_dr2.metrics.network_metric import NetworkMetric
from lightning_dr2.nets.loading import load_into, read_state_dict
from lightning_dr2.weights import find_weight

# torchvision's IMAGENET1K_V1 files, as named in its model zoo (and so in the torch hub cache); both are
# registered in `lightning_dr2.weights.WEIGHTS`, which also searches the torch hub cache for them.
BACKBONE_FILES = {"vgg": "vgg16-397923af.pth", "alex": "alexnet-owt-7be5be79.pth"}


def find_backbone(net: str = "vgg", weights_dir: str | os.PathLike | None = None) -> Path:
    """Path of the torchvision ImageNet weights LPIPS needs for `net` (`lightning_dr2.weights.find_weight`:
    `weights_dir`, `$DR2_WEIGHTS`, `data/weights`, the torch hub cache); MissingWeightsError if absent."""
    if net not in BACKBONE_FILES:
        raise ValueError(f"LPIPS net must be one of {sorted(BACKBONE_FILES)}, got {net!r}")
    return find_weight(BACKBONE_FILES[net], weights_dir)


def build_lpips(
    net: str = "vgg", weights_dir: str | os.PathLike | None = None, pretrained_backbone: bool = True
) -> nn.Module:
    """An eval-mode, frozen `lpips.LPIPS` (v0.1, lin heads from the package) with a backbone from disk."""
    if net not in BACKBONE_FILES:
        raise ValueError(f"LPIPS net must be one of {sorted(BACKBONE_FILES)}, got {net!r}")
    path = find_backbone(net, weights_dir) if pretrained_backbone else None  # fail before building anything
    import lpips  # here, not at the top: it pulls in scipy and tqdm; keep importing our package light

    with warnings.catch_warnings():
        # torchvision warns that lpips passes the deprecated `pretrained=False`; it means weights=None.
        warnings.simplefilter("ignore", UserWarning)
        model = lpips.LPIPS(net=net, version="0.1", pretrained=True, pnet_rand=True, verbose=False)
    if path is not None:
        _load_backbone(model.net, path)
    model.eval().requires_grad_(False)
    return model


def _load_backbone(backbone: nn.Module, path: Path) -> None:
    """Load torchvision `features.<i>.*` weights into lpips' `slice<k>.<i>.*` modules (same i)."""
    state = read_state_dict(path)
    mapped = {}
    for name in backbone.state_dict():
        _, index, param = name.split(".")
        source = f"features.{index}.{param}"
        if source in state:
            mapped[name] = state[source]
    load_into(backbone, mapped, source=f"{path} (torchvision features.* mapped to lpips slices)")


class LPIPSMetric(NetworkMetric):
    """Mean per-image LPIPS of images in `value_range` (default [-1, 1]); float64 sum/count states.

    Args:
        net: "vgg" (the papers' protocol) or "alex".
        weights_dir: extra folder to look for the backbone file in (see `lightning_dr2.weights.search_dirs`).
        pretrained_backbone: False keeps a random backbone; only for tests and smoke runs.
        quantize: score uint8-quantised images, as BasicSR does on saved PNGs.
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = False

    def __init__(
        self,
        net: str = "vgg",
        weights_dir: str | os.PathLike | None = None,
        pretrained_backbone: bool = True,
        value_range: Sequence[float] = (-1.0, 1.0),
        quantize: bool = True,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.net_name = net
        self.value_range = checked_value_range(value_range)
        self.quantize = bool(quantize)
        self.net = build_lpips(net, weights_dir, pretrained_backbone)
        self.add_state("sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def _to_unit_range(self, images: Tensor) -> Tensor:
        if self.quantize:  # BasicSR: uint8 / 255, then normalize(mean=0.5, std=0.5)
            return (to_uint8(images, self.value_range).float() / 255.0 - 0.5) / 0.5
        low, high = self.value_range
        return (images.float() - low) / (high - low) * 2.0 - 1.0

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add a batch of N x 3 x H x W images."""
        if preds.shape != target.shape:
            raise ValueError(f"preds and target shapes differ: {tuple(preds.shape)} vs {tuple(target.shape)}")
        if preds.ndim != 4 or preds.shape[1] != 3:
            raise ValueError(f"LPIPS needs N x 3 x H x W RGB images, got shape {tuple(preds.shape)}")
        with torch.no_grad(), torch.autocast(device_type=preds.device.type, enabled=False):
            values = self.net(self._to_unit_range(preds), self._to_unit_range(target))
        values = values.flatten().double()
        self.last_values = values.detach()  # per-image values of this batch
        self.sum += values.sum()
        self.count += values.numel()

    def compute(self) -> Tensor:
        return self.sum / self.count
