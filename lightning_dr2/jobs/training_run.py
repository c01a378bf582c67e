"""What every training job (DDPM, enhancer) shares: the run's start, its checkpoints, Trainer and fit.

One place for the run directory conventions (name, config.yaml, run_info.json, resume=auto), the
preemption-safe checkpointing (atomic writes, signal checkpoints) and the Trainer options both jobs use.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import Logger
from pytorch_lightning.utilities.exceptions import SIGTERMException

from lightning_dr2.callbacks.preemption import PreemptionCheckpoint, TrainingInterrupted
from lightning_dr2.checkpoints import (
    AtomicCheckpointIO,
    checkpoint_candidates,
    newest_valid_checkpoint,
    read_step,
    remove_stale_temp_files,
)
from lightning_dr2.config.loader import ConfigError, open_run_dir, save_config
from lightning_dr2.loggers import keep_earlier_history
from lightning_dr2.outputs import is_first_process
from lightning_dr2.runinfo import record_run_info

log = logging.getLogger(__name__)


def resolve_precision(precision: str, accelerator: str) -> str:
    """`auto`: bf16-mixed when training on a CUDA GPU, full fp32 on CPU."""
    if precision != "auto":
        return precision
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    return "bf16-mixed" if on_gpu else "32-true"


def resolve_resume(cfg: DictConfig, run_path: Path) -> str | None:
    """The checkpoint to resume from, if any (see `DDPMConfig.resume`).

    auto/true take the newest checkpoint of the run that loads (periodic, last, signal or SLURM requeue);
    a torn newer one is reported and skipped; when none loads, auto says it starts from scratch and keeps the
    earlier metrics beside the new ones (`loggers.keep_earlier_history`). true fails when there is none; a path
    must load. false on a run that holds checkpoints is refused: the new run would overwrite them.
    """
    value = str(cfg.resume).strip()
    if value.lower() in ("false", "no", "none", ""):
        existing = checkpoint_candidates(run_path)
        if existing:
            raise ConfigError(
                f"resume={value} but the run directory {run_path} already holds {len(existing)} checkpoint(s) "
                f"(e.g. {existing[0].name}); a new run there would overwrite them. Name a new run with run=NAME, "
                "or continue this one with resume=auto"
            )
        return None
    if value.lower() in ("auto", "true"):
        remove_stale_temp_files(run_path)
        newest = newest_valid_checkpoint(run_path)
        if newest is None and value.lower() == "true":
            raise ConfigError(
                f"resume=true but {run_path / 'checkpoints'} holds no readable checkpoint. Name the run to "
                f"continue with run=<name> (runs are under {run_path.parent}) or pass resume=<path/to.ckpt>."
            )
        if newest is None:
            _start_from_scratch(run_path)
        return str(newest) if newest is not None else None
    if not Path(value).is_file():
        raise ConfigError(f"resume={value}: no such checkpoint file")
    _, problem = read_step(Path(value))
    if problem is not None:
        raise ConfigError(
            f"resume={value} does not load as a training checkpoint ({problem}): the file is torn or truncated, or "
            "not a checkpoint of `train`/`train-enhancer`. Resume from another one (e.g. resume=auto picks the "
            "newest that loads) or start a new run"
        )
    return value


def _start_from_scratch(run_path: Path) -> None:
    """A run directory with torn checkpoints or earlier metrics but nothing to resume: say so, keep the metrics."""
    torn = checkpoint_candidates(run_path)
    kept = keep_earlier_history(run_path) if is_first_process() else None
    if torn or kept:
        log.warning(
            "%s: %s: starting from scratch at step 0%s",
            run_path,
            f"none of its {len(torn)} checkpoint(s) loads (listed above)" if torn else "no checkpoint to resume from",
            f"; the earlier metrics are kept in {kept}" if kept else "",
        )


def start_run(cfg: DictConfig) -> tuple[Path, str | None]:
    """Name and claim the run directory, find the checkpoint to resume, seed, and record config.yaml and
    run_info.json."""
    path = open_run_dir(cfg)
    ckpt_path = resolve_resume(cfg, path)
    pl.seed_everything(cfg.seed, workers=True)
    save_config(cfg, path / "config.yaml")
    record_run_info(path)
    return path, ckpt_path


def checkpoint_callbacks(
    path: Path, every_n_steps: int, save_top_k: int
) -> tuple[ModelCheckpoint, PreemptionCheckpoint]:
    """Periodic + last checkpoints (`every_n_steps` in Lightning steps) and the signal checkpoint."""
    periodic = ModelCheckpoint(
        dirpath=path / "checkpoints",
        filename="step{step:07d}",
        auto_insert_metric_name=False,
        every_n_train_steps=every_n_steps,
        save_top_k=save_top_k,
        save_last=True,
    )
    return periodic, PreemptionCheckpoint(path / "checkpoints")


def build_trainer(
    path: Path, t: DictConfig, callbacks: list[pl.Callback], loggers: list[Logger], **options: Any
) -> pl.Trainer:
    """The Trainer of a training job: `trainer.*` settings, atomic checkpoint writes, step-positioned data
    (the DataModules shard and seed their own samplers); `options` add or override job-specific ones."""
    kwargs: dict[str, Any] = dict(
        default_root_dir=str(path),
        max_steps=t.max_steps,
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=t.strategy,
        precision=resolve_precision(t.precision, t.accelerator),
        log_every_n_steps=t.log_every_n_steps,
        val_check_interval=t.val_check_interval,
        check_val_every_n_epoch=None,
        limit_val_batches=t.limit_val_batches,
        callbacks=callbacks,
        logger=loggers,
        enable_progress_bar=t.progress_bar,
        use_distributed_sampler=False,
        max_epochs=-1,
        plugins=[AtomicCheckpointIO()],
    )
    return pl.Trainer(**{**kwargs, **options})


def fit_preemptible(
    trainer: pl.Trainer, module: pl.LightningModule, datamodule: Any, ckpt_path: str | None, preemption: Any
) -> None:
    """`trainer.fit`; a SIGTERM/SIGUSR1 stop becomes `TrainingInterrupted` naming the signal checkpoint."""
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    except SIGTERMException as err:
        raise TrainingInterrupted(trainer.global_step, preemption.saved) from err
