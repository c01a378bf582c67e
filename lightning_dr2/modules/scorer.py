"""The scoring LightningModule of `eval`: saved outputs against ground truth with the metric suite, under any
Lightning strategy (each image once across ranks, float64 metric states summed over ranks)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from lightning_dr2.image_io import resize
from lightning_dr2.metrics.suite import MetricSuite

log = logging.getLogger(__name__)


class ScoreModule(pl.LightningModule):
    """test_step: update the metric suite with same-size groups (`group_by_size` batches); the epoch end
    computes the synced values and writes them to `out_dir` (per-image rows per rank, totals from rank 0):
    files, because under `ddp_spawn` the module that scored lives in another process."""

    def __init__(self, suite: MetricSuite, out_dir: Path) -> None:
        super().__init__()
        self.suite = suite
        self.out_dir = out_dir
        self.per_image: list[dict[str, Any]] = []
        self._resized = False

    def test_step(self, batch: list[dict[str, Any]], batch_idx: int) -> None:
        for group in batch:
            self._score(group)

    def _score(self, group: dict[str, Any]) -> None:
        pred, target = group["pred"], group.get("target")
        gray = {key: group[key] for key in ("pred_gray", "target_gray") if key in group}
        if target is not None and pred.shape[-2:] != target.shape[-2:]:
            # the protocol's one resize: paired metrics compare the output at its ground truth's size
            if not self._resized:
                log.warning(
                    "outputs are %s, ground truth %s: outputs resized (bicubic) to score them",
                    tuple(pred.shape[-2:]),
                    tuple(target.shape[-2:]),
                )
                self._resized = True
            pred = resize(pred, target.shape[-1]).clamp(-1, 1)
            gray.pop("pred_gray", None)  # the file's gray is not the resized output's: identity uses its RGB
        values = self.suite.update(pred, target, **gray)
        for i, name in enumerate(group["name"]):
            self.per_image.append({"name": name, **{k: float(v[i]) for k, v in values.items()}})

    def on_test_epoch_end(self) -> None:
        results = self.suite.compute()  # every rank takes part in the sync
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / f"per_image.rank{self.global_rank}.json").write_text(json.dumps(self.per_image))
        if self.trainer.is_global_zero:
            (self.out_dir / "scores.json").write_text(json.dumps(results))
