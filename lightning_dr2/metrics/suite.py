"""The set of metrics one evaluation reports, with the papers' protocols; skipped metrics say why.

PSNR/SSIM need nothing; LPIPS, FID and the identity distance need weight files that cannot ship. With
`skip_missing=True` a metric whose file is missing is left out and `notes` names the file that enables
it (the quickstart); otherwise the missing file is an error (a benchmark run must not silently drop a
column).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from lightning_dr2.metrics.frechet import FIDStats, frechet_distance
from lightning_dr2.metrics.psnr_ssim import PSNR, SSIM

METRICS = ("psnr", "ssim", "lpips", "fid", "deg")
PAIRED = ("psnr", "ssim", "lpips", "deg")  # need the ground truth
ENABLING_FILE = {
    "lpips": "vgg16-397923af.pth (alexnet-owt-7be5be79.pth for lpips_net=alex)",
    "fid": "pt_inception-2015-12-05-6726825d.pth",
    "deg": "resnet18_110.pth",
}


class MetricSuite(nn.Module):
    """PSNR, SSIM, LPIPS, FID, Deg over (restored, ground truth) batches in [-1, 1].

    `fid_reference`: statistics file for FID; None uses the statistics of the targets seen by `update`
    (a paired set's own HQ images). For sets without targets, FID needs a reference file.
    The metric networks live here (in a callback or the eval job), never inside a trained module.
    """

    def __init__(
        self,
        names: Sequence[str] = METRICS,
        paired: bool = True,
        fid_reference: str | Path | FIDStats | None = None,
        lpips_net: str = "vgg",
        weights_dir: str | None = None,
        skip_missing: bool = False,
        random_networks: bool = False,
    ) -> None:
        super().__init__()
        unknown = [n for n in names if n not in METRICS]
        if unknown:
            raise ValueError(f"unknown metrics {unknown}; available: {list(METRICS)}")
        self.paired = paired
        self.notes: dict[str, str] = {}
        self.metrics = nn.ModuleDict()
        self.fid_targets = None
        self.fid_reference = fid_reference
        self.random_networks = random_networks  # tests and smoke runs only: no weight files needed
        for name in names:
            if name in PAIRED and not paired:
                self.notes[name] = "needs ground truth (real LQ set)"
                continue
            if name == "fid" and fid_reference is None and not paired:
                self.notes[name] = "needs fid_reference statistics for a set without ground truth"
                continue
            try:
                # Random networks (smoke tests) are seeded, so two runs score alike; real weights ignore it.
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(0)
                    self.metrics[name] = self._build(name, lpips_net, weights_dir)
            except FileNotFoundError as err:
                if not skip_missing:
                    raise
                self.notes[name] = f"skipped: needs {ENABLING_FILE[name]} ({type(err).__name__})"
        if "fid" in self.metrics and fid_reference is None:
            from lightning_dr2.metrics.fid import FID

            self.fid_targets = FID(None, network=self.metrics["fid"].net)

    def _build(self, name: str, lpips_net: str, weights_dir: str | None) -> nn.Module:
        if name == "psnr":
            return PSNR()
        if name == "ssim":
            return SSIM()
        if name == "lpips":
            from lightning_dr2.metrics.lpips import LPIPSMetric

            return LPIPSMetric(net=lpips_net, weights_dir=weights_dir, pretrained_backbone=not self.random_networks)
        if name == "fid":
            from lightning_dr2.metrics.fid import FID
            from lightning_dr2.nets.inception import FIDInceptionV3

            network = FIDInceptionV3().eval() if self.random_networks else None
            return FID(self.fid_reference, network=network, weights_dir=weights_dir)
        from lightning_dr2.metrics.identity import IdentityDistance
        from lightning_dr2.nets.arcface import ResNetFace18

        network = ResNetFace18().eval() if self.random_networks else None
        return IdentityDistance(network=network, weights_dir=weights_dir)

    @property
    def names(self) -> list[str]:
        return list(self.metrics.keys())

    @torch.no_grad()
    def update(self, preds: Tensor, target: Tensor | None = None) -> dict[str, Tensor]:
        """Add a batch; returns the per-image values of the per-image metrics (for CSVs and tables)."""
        per_image: dict[str, Tensor] = {}
        for name, metric in self.metrics.items():
            if name == "fid":
                metric.update(preds)
                if self.fid_targets is not None:
                    self.fid_targets.update(target)
                continue
            metric.update(preds, target)
            per_image[name] = metric.last_values.double().cpu()
        return per_image

    def compute(self) -> dict[str, float]:
        """Every metric over all processes (torchmetrics syncs the float64 sums)."""
        out: dict[str, float] = {}
        for name, metric in self.metrics.items():
            if name == "fid":
                out[name] = self._fid(metric)
            else:
                out[name] = float(metric.compute())
            if name == "deg":
                out["deg_identical"] = float(metric.identical_count())
        return out

    def _fid(self, metric: nn.Module) -> float:
        if self.fid_targets is None:
            return float(metric.compute())
        mine, ref = metric.stats(), self.fid_targets.stats()
        if mine.count < 2 or ref.count < 2:
            return math.nan
        return float(frechet_distance(mine.mu, mine.sigma, ref.mu, ref.sigma))

    def reset(self) -> None:
        for metric in self.metrics.values():
            metric.reset()
        if self.fid_targets is not None:
            self.fid_targets.reset()
