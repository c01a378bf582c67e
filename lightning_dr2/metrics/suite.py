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

from lightning_dr2.metrics.catalogue import METRICS, check_names, default_metrics, result_key
from lightning_dr2.metrics.frechet import FIDStats, frechet_distance


class MetricSuite(nn.Module):
    """PSNR, SSIM, LPIPS, FID, Deg over (restored, ground truth) batches in [-1, 1].

    `fid_reference`: statistics for FID (a file path, or a bare file name found through the weights lookup);
    None uses the statistics of the targets seen by `update` (a paired set's own HQ images). The result key
    says which: `fid_gt` or e.g. `fid_ffhq512` (`catalogue.result_key`). For sets without targets, FID
    needs a reference file. The metric networks live here (in a callback or the eval job), never inside a
    trained module.
    """

    def __init__(
        self,
        names: Sequence[str] | None = None,
        paired: bool = True,
        fid_reference: str | Path | FIDStats | None = None,
        lpips_net: str = "vgg",
        weights_dir: str | None = None,
        skip_missing: bool = False,
        random_networks: bool = False,
    ) -> None:
        super().__init__()
        names = default_metrics() if names is None else list(names)
        check_names(names)
        self.paired = paired
        self.notes: dict[str, str] = {}
        self.metrics = nn.ModuleDict()
        self.fid_targets = None
        # in-memory statistics (FIDStats) have no file name: the caller knows what they are
        self.fid_key = "fid_ref" if isinstance(fid_reference, tuple) else result_key("fid", fid_reference)
        for name in names:
            info = METRICS[name]
            if info.paired and not paired:
                self.notes[name] = "needs ground truth (real LQ set)"
                continue
            if name == "fid" and fid_reference is None and not paired:
                self.notes[name] = "needs fid_reference statistics for a set without ground truth"
                continue
            try:
                # Random networks (smoke tests) are seeded, so two runs score alike; real weights ignore it.
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(0)
                    self.metrics[name] = info.build(
                        lpips_net=lpips_net,
                        weights_dir=weights_dir,
                        random_networks=random_networks,
                        fid_reference=fid_reference,
                    )
            except FileNotFoundError as err:
                if not skip_missing:
                    raise
                # the file that was looked for (FID's reference statistics or a network's weights)
                needed = getattr(err, "name", "") or err.filename or " or ".join(info.weights)
                self.notes[name] = f"skipped: needs {needed} ({type(err).__name__})"
        if "fid" in self.metrics and fid_reference is None:
            from lightning_dr2.metrics.fid import FID

            self.fid_targets = FID(None, network=self.metrics["fid"].net)

    @property
    def names(self) -> list[str]:
        return list(self.metrics.keys())

    @torch.no_grad()
    def update(
        self,
        preds: Tensor,
        target: Tensor | None = None,
        pred_gray: Tensor | None = None,
        target_gray: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Add a batch; returns the per-image values of the per-image metrics (for CSVs and tables).

        `pred_gray` / `target_gray`: uint8 gray (B, H, W) decoded from JPEG files, for the identity metric
        (`IdentityDistance.update`); None: gray from the RGB images.
        """
        per_image: dict[str, Tensor] = {}
        for name, metric in self.metrics.items():
            if name == "fid":
                metric.update(preds)
                if self.fid_targets is not None:
                    self.fid_targets.update(target)
                continue
            if name == "deg":
                metric.update(preds, target, preds_gray=pred_gray, target_gray=target_gray)
            else:
                metric.update(preds, target)
            per_image[name] = metric.last_values.double().cpu()
        return per_image

    def compute(self) -> dict[str, float]:
        """Every metric over all processes (torchmetrics syncs the float64 sums)."""
        out: dict[str, float] = {}
        for name, metric in self.metrics.items():
            if name == "fid":
                out[self.fid_key] = self._fid(metric)
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
