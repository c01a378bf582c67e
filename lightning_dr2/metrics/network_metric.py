"""The base of the metrics that run a frozen network (FID's Inception, LPIPS, ArcFace)."""

from __future__ import annotations

from torchmetrics import Metric


class NetworkMetric(Metric):
    """A Metric whose frozen network `self.net` stays in eval mode (BatchNorm running statistics, no dropout)
    whatever mode the LightningModule holding the metric switches to: training must not change a score."""

    def train(self, mode: bool = True) -> NetworkMetric:
        super().train(mode)
        self.net.eval()
        return self
