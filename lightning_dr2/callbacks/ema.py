"""Exponential moving average of the network's weights, kept in fp32, saved with checkpoints.

Written here rather than using Lightning's `WeightAveraging`: that callback deep-copies the whole
LightningModule and swaps weights in and out around validation, while diffusion training needs an
fp32 EMA of the network only, a decay warm-up, and direct access to the EMA network for sampling,
export and evaluation (the EMA weights are the ones DDPM papers release).
"""

from __future__ import annotations

import copy
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from lightning_dr2.modules.guards import step_was_skipped


class EMA(pl.Callback):
    """EMA of `pl_module.<attr>` (default `net`), updated once per optimizer step.

    Updates follow `trainer.global_step`, so gradient accumulation never updates the average twice or
    on a partial step, and a step the module's non-finite guard skipped (`modules.guards`) is not averaged.
    `decay_at(n) = min(decay, (1 + n) / (10 + n))` with warm-up.
    """

    def __init__(self, decay: float = 0.9999, warmup: bool = True, attr: str = "net") -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.warmup = warmup
        self.attr = attr
        self.averages = attr  # what `modules.averaged.ema_or_live` looks for
        self.module: nn.Module | None = None
        self.num_updates = 0
        self._last_step = -1
        self._pending_state: dict[str, Any] | None = None

    def decay_at(self, num_updates: int) -> float:
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + num_updates) / (10 + num_updates))

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.module is None:
            source = getattr(pl_module, self.attr)
            self.module = copy.deepcopy(source).float().eval().requires_grad_(False)
        if self._pending_state is not None:
            self._apply_state(self._pending_state)
            self._pending_state = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        assert self.module is not None
        self.module.to(pl_module.device)
        self._last_step = trainer.global_step

    @torch.no_grad()
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        if trainer.global_step == self._last_step:
            return  # no optimizer step happened (accumulation, or the step was skipped)
        self._last_step = trainer.global_step
        if not step_was_skipped(pl_module):
            self.update(getattr(pl_module, self.attr))

    @torch.no_grad()
    def update(self, source: nn.Module) -> None:
        assert self.module is not None
        decay = self.decay_at(self.num_updates)
        ema_params = list(self.module.parameters())
        src_params = [p.detach().float() for p in source.parameters()]
        torch._foreach_lerp_(ema_params, src_params, 1.0 - decay)
        for ema_buf, buf in zip(self.module.buffers(), source.buffers(), strict=True):
            ema_buf.copy_(buf)
        self.num_updates += 1

    def state_dict(self) -> dict[str, Any]:
        assert self.module is not None
        return {"num_updates": self.num_updates, "weights": self.module.state_dict(), "decay": self.decay}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Lightning restores callback state before `setup` may have built the copy when resuming.
        if self.module is None:
            self._pending_state = state_dict
        else:
            self._apply_state(state_dict)

    def _apply_state(self, state: dict[str, Any]) -> None:
        assert self.module is not None
        self.num_updates = int(state["num_updates"])
        self.module.load_state_dict(state["weights"])
