"""The enhancer's validation grid: input y | DR2 | enhanced (EMA generator) | target on the fixed validation
pairs, saved as PNG under the run's samples/ and logged to the loggers that take images — the enhancer's
counterpart of the DDPM's `SampleGrid`."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor

from lightning_dr2.report import save_grid


class EnhancerValidationGrid(pl.Callback):
    """Collects the first `rows` validation pairs on rank 0 (the module's `validation_step` returns its
    enhanced batch as {"out": ...}) and writes `val_iter<iteration>.png` at the end of each validation."""

    def __init__(self, out_dir: str | Path, rows: int = 8, steps_per_iteration: int = 1) -> None:
        self.out_dir = Path(out_dir)
        self.rows = rows
        self.steps_per_iteration = steps_per_iteration
        self.last_path: Path | None = None
        self._rows: list[Tensor] = []

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Mapping[str, Any],
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if trainer.global_rank != 0 or trainer.sanity_checking or len(self._rows) >= self.rows or outputs is None:
            return
        faces = torch.stack([batch["y"], batch["dr2"], outputs["out"], batch["x"]], dim=1).flatten(0, 1)
        self._rows.extend(faces.detach().float().cpu().split(4))

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._rows:
            iteration = trainer.global_step // self.steps_per_iteration
            rows = torch.cat(self._rows[: self.rows])
            self.last_path = save_grid(rows, self.out_dir / f"val_iter{iteration:07d}.png", nrow=4)
            for logger in trainer.loggers:
                if hasattr(logger, "log_image"):
                    logger.log_image(key="val/grid", images=[str(self.last_path)], step=iteration)
        self._rows = []
