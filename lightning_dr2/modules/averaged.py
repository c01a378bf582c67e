"""Which copy of a network to sample, validate and export with: the weight average when a callback keeps one.

Here, below the callbacks, so a LightningModule can ask without importing them: a callback that keeps an
average says so with `averages = "<attribute name>"` and holds the averaged copy in `.module`
(`callbacks.ema.EMA`).
"""

from __future__ import annotations

import pytorch_lightning as pl
from torch import nn


def ema_or_live(trainer: pl.Trainer, pl_module: pl.LightningModule, attr: str = "net") -> nn.Module:
    """The averaged copy of `pl_module.<attr>` when a callback holds one, else the live network."""
    for cb in trainer.callbacks:
        if getattr(cb, "averages", None) == attr and getattr(cb, "module", None) is not None:
            return cb.module
    return getattr(pl_module, attr)
