"""The scoring LightningModule of `eval`: saved outputs against ground truth through the shared `Scorer`, under
any Lightning strategy (each image once across ranks, float64 metric states summed over ranks)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from lightning_dr2.metrics.scoring import Scorer
from lightning_dr2.metrics.suite import MetricSuite


class ScoreModule(pl.LightningModule):
    """test_step: score the same-size groups of a batch (`group_by_size`) with `Scorer`; the epoch end
    computes the synced values and writes them to `out_dir` (per-image rows per rank, totals from rank 0):
    files, because under `ddp_spawn` the module that scored lives in another process."""

    def __init__(self, suite: MetricSuite, out_dir: Path) -> None:
        super().__init__()
        self.suite = suite  # a submodule: Lightning moves the metric networks and states to the device
        self.scorer = Scorer(suite)
        self.out_dir = out_dir
        self.per_image: list[dict[str, Any]] = []

    def test_step(self, batch: list[dict[str, Any]], batch_idx: int) -> None:
        for group in batch:
            files = {key: group.get(key) for key in ("target", "pred_gray", "target_gray")}
            self.per_image += self.scorer.score(group["name"], group["pred"], **files)[1]

    def on_test_epoch_end(self) -> None:
        results = self.scorer.compute()  # every rank takes part in the sync
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / f"per_image.rank{self.global_rank}.json").write_text(json.dumps(self.per_image))
        if self.trainer.is_global_zero:
            (self.out_dir / "scores.json").write_text(json.dumps(results))
