"""The header every training run shares (DDPM and enhancer): name, run id, seed, resume, checkpoints, W&B,
Trainer, and the benchmark evaluator that scores the network while it trains."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lightning_dr2.config.loader import Checks
from lightning_dr2.config.sets import EvalSetConfig, SettingConfig, check_settings_list
from lightning_dr2.metrics.catalogue import default_metrics


@dataclass
class EMAConfig:
    decay: float = 0.9999
    # Use min(decay, (1 + n) / (10 + n)) after n updates, so early EMA weights are not stuck at init.
    warmup: bool = True


@dataclass
class CheckpointConfig:
    every_n_steps: int = 5000
    save_top_k: int = -1  # -1 keeps every periodic checkpoint


@dataclass
class WandbConfig:
    # auto: online when credentials are configured (WANDB_API_KEY or a netrc entry), else offline.
    mode: str = "auto"  # auto | online | offline | disabled
    project: str = "lightning_dr2"
    entity: str | None = None
    group: str | None = None  # defaults to the experiment name
    tags: list[str] = field(default_factory=list)
    init_timeout: float = 30.0  # seconds to wait for an online start before continuing offline


@dataclass
class TrainerConfig:
    max_steps: int = 1000
    accelerator: str = "auto"
    devices: Any = "auto"  # int, list of ids, or "auto"
    num_nodes: int = 1
    strategy: str = "auto"  # ddp is chosen by Lightning for several devices
    precision: str = "auto"  # auto: bf16-mixed on GPU, 32-true on CPU
    accumulate_grad_batches: int = 1
    log_every_n_steps: int = 10
    val_check_interval: int = 1000  # in training steps
    limit_val_batches: float = 1.0
    compile: bool = False
    channels_last: bool = False
    progress_bar: bool = True
    # Steps whose loss or gradients are NaN/Inf are skipped; this many in a row stop training with an error.
    max_bad_steps: int = 20


@dataclass
class EvaluatorConfig:
    """The benchmark evaluator callback during training (`lightning_dr2.callbacks.evaluator`)."""

    enabled: bool = False
    every_n_steps: int = 5000
    sets: list[EvalSetConfig] = field(default_factory=list)
    settings: list[SettingConfig] = field(default_factory=lambda: [SettingConfig()])
    metrics: list[str] = field(default_factory=default_metrics)
    respacing: int = 100
    batch_size: int = 8
    skip_missing_weights: bool = True
    random_metric_networks: bool = False  # smoke tests only
    log_images: int = 8


@dataclass
class RunConfig:
    """The run header of a training job: where it writes, how it resumes, logs, trains and is evaluated."""

    experiment: str = "ddpm_tiny"
    run: str | None = None  # default: $DR2_RUN, $SLURM_JOB_ID, or a timestamp chosen once
    runs_dir: str = "runs"
    seed: int = 0
    # auto: resume from the run's last.ckpt if it exists (SLURM requeue); true: require it; false; or a path.
    resume: str = "auto"
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    evaluator: EvaluatorConfig = field(default_factory=EvaluatorConfig)

    @staticmethod
    def check(c: Checks) -> None:
        c.at_least("trainer.max_steps", 1, ": the number of optimizer steps to train for")
        c.at_least("trainer.accumulate_grad_batches", 1)
        c.at_least("trainer.log_every_n_steps", 1)
        c.at_least("trainer.val_check_interval", 1, " (training steps between validations)")
        c.at_least("trainer.num_nodes", 1)
        c.at_least("trainer.max_bad_steps", 1, " (non-finite steps in a row before training stops)")
        c.require("trainer.limit_val_batches", lambda v: v >= 0, "must be >= 0 (0 turns validation off)")
        c.accelerator("trainer.accelerator")
        c.one_of(
            "checkpoint.save_top_k",
            (-1, 0, 1),
            ": periodic checkpoints have no metric to rank them by, and Lightning keeps the best k > 1 only with a "
            "monitored metric. Use -1 (keep every periodic checkpoint), 0 (only last.ckpt) or 1 (only the newest), "
            "and set checkpoint.every_n_steps for how often one is written",
        )
        c.at_least("checkpoint.every_n_steps", 0, " (0: no periodic checkpoints)")
        check_evaluator(c)


def check_evaluator(c: Checks) -> None:
    """The `evaluator` section of a training config (DDPM or enhancer)."""
    if not c.value("evaluator.enabled"):
        return
    c.require(
        "evaluator.sets",
        lambda v: len(v) > 0,
        "must list the benchmark sets to score when evaluator.enabled=true, e.g. "
        "evaluator.sets=[{name: celeba_test, root: data/testsets/celeba_test, limit: 100}]",
    )
    c.at_least("evaluator.batch_size", 1)
    c.at_least("evaluator.every_n_steps", 1)
    check_settings_list(c, "evaluator.settings", "evaluator.respacing")
