"""Glue for running the DR2E pipeline under `Trainer.predict` (device placement, DDP, compile)."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch

from lightning_dr2.dr2.pipeline import DR2E, apply_restorer, draws_noise
from lightning_dr2.exports.restorer import LoadedRestorer


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


class RestorerModule(pl.LightningModule):
    """predict_step: a batch of faces at a network's native size -> that network alone (a baseline, or the
    enhancer stage of DR2+X over saved DR2 outputs), with per-image seeds when it draws noise."""

    def __init__(self, loaded: LoadedRestorer, dtype: torch.dtype | None) -> None:
        super().__init__()
        # No channels_last here: GFP-GAN's spandrel port `.view`s a conv output, which fails on that layout.
        self.net = loaded.module
        self.dtype_ = dtype
        self.seeded = draws_noise(loaded)

    @torch.no_grad()
    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        if not batch["name"]:
            return {"name": [], "seed": [], "lq": batch["lq"], "dr2": None, "output": None}
        seeds = batch["seed"] if self.seeded else None
        out = apply_restorer(self.net, batch["lq"].to(self.device), self.dtype_, seeds)
        return {"name": batch["name"], "seed": batch["seed"], "lq": batch["lq"], "dr2": None, "output": out}
