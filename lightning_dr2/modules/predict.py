"""Glue for running the DR2E pipeline under `Trainer.predict` (device placement, DDP, compile)."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch

from lightning_dr2.dr2.pipeline import DR2E


class RestoreModule(pl.LightningModule):
    """predict_step: a batch of resized faces with per-image seeds -> DR2 and final outputs."""

    def __init__(self, pipe: DR2E, compile: bool = False, channels_last: bool = False) -> None:
        super().__init__()
        self.pipe = pipe
        # Registered so Lightning moves them to the device; the pipe keeps using the same objects.
        self.unet = pipe.unet
        self.enhancer = pipe.enhancer
        self.compile = compile
        self.channels_last = channels_last

    def configure_model(self) -> None:
        # Compiled wrappers are built here, in the worker process (they cannot be pickled for spawn).
        if self.compile or self.channels_last:
            self.pipe.optimize(compile=self.compile, channels_last=self.channels_last)

    @torch.no_grad()
    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        if not batch["name"]:
            return {"name": [], "seed": [], "lq": batch["lq"], "dr2": None, "output": None}
        out = self.pipe.restore_tensors(batch["lq"], seeds=batch["seed"])
        return {"name": batch["name"], "seed": batch["seed"], "lq": batch["lq"], **out}


class CacheModule(RestoreModule):
    """predict_step: DR2 only, each row with its own (N, tau, omega) and seed."""

    @torch.no_grad()
    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        if not batch["name"]:
            return {"name": [], "seed": [], "lq": batch["lq"], "dr2": None, "output": None}
        dr2 = self.pipe.dr2.by_setting(batch["lq"].to(self.device), batch["setting"], batch["seed"])
        return {"name": batch["name"], "seed": batch["seed"], "lq": batch["lq"], "dr2": dr2, "output": dr2}
