"""Preemption-safe training: SIGTERM (scancel, most preemptions) and SIGUSR1 save a checkpoint and stop.

Lightning turns SIGTERM into a `SIGTERMException` at the end of the current batch (after the optimizer
step, on every rank) but saves nothing. This callback saves a checkpoint at that step, through the
trainer's atomic checkpoint writer, before the exception ends `fit`. Outside SLURM, SIGUSR1 (the signal
`sbatch --signal=SIGUSR1@90` sends before the time limit) is turned into the same SIGTERM path; under
SLURM, Lightning's own SIGUSR1 handler saves `hpc_ckpt_*.ckpt` and requeues the job, and `resume=auto`
picks that file up.
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from lightning_fabric.plugins.environments import SLURMEnvironment
from pytorch_lightning.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)


class TrainingInterrupted(RuntimeError):
    """Training stopped on a signal; the message names the step and the checkpoint to resume from."""

    def __init__(self, step: int, checkpoint: Path | None) -> None:
        where = f"checkpoint saved to {checkpoint}" if checkpoint else "no checkpoint could be saved"
        super().__init__(
            f"training stopped by a signal at step {step}; {where}. Run the same command again "
            "(resume=auto continues from the newest valid checkpoint of the run)."
        )
        self.step = step
        self.checkpoint = checkpoint


class PreemptionCheckpoint(pl.Callback):
    def __init__(self, dirpath: str | Path) -> None:
        self.dirpath = Path(dirpath)
        self.saved: Path | None = None
        self._previous_usr1: Any = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit" or SLURMEnvironment.detect():
            return  # under SLURM, Lightning's SIGUSR1 handler checkpoints and requeues
        self._previous_usr1 = signal.signal(signal.SIGUSR1, _as_sigterm)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self._previous_usr1 is not None:
            signal.signal(signal.SIGUSR1, self._previous_usr1)
            self._previous_usr1 = None

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException):
            return
        path = self.dirpath / f"signal-step{trainer.global_step:07d}.ckpt"
        trainer.save_checkpoint(path)
        self.saved = path
        log.warning("signal received: saved %s at step %d", path, trainer.global_step)


def _as_sigterm(signum: int, frame: Any) -> None:
    os.kill(os.getpid(), signal.SIGTERM)
