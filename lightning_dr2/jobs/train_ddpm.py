"""Build and run a DDPM training job from a resolved config: data, module, callbacks, loggers, Trainer."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import LearningRateMonitor, ThroughputMonitor

from lightning_dr2.callbacks.curves import LossCurve
from lightning_dr2.callbacks.ema import EMA
from lightning_dr2.callbacks.samples import SampleGrid
from lightning_dr2.config.loader import ConfigError
from lightning_dr2.datasets.datamodule import FaceDataModule
from lightning_dr2.diffusion import DiffusionConfig
from lightning_dr2.exports.unet import write_unet
from lightning_dr2.jobs.training_run import build_trainer, checkpoint_callbacks, fit_preemptible, start_run
from lightning_dr2.loggers import build_loggers
from lightning_dr2.modules.averaged import ema_or_live
from lightning_dr2.modules.ddpm import DDPMModule
from lightning_dr2.modules.guards import check_finite_weights

log = logging.getLogger(__name__)


def build_datamodule(cfg: DictConfig) -> FaceDataModule:
    data = OmegaConf.to_container(cfg.data)
    synthetic_n, use_synthetic = data.pop("synthetic_n"), data.pop("synthetic")
    synthetic = {"n": synthetic_n, "size": cfg.data.image_size} if use_synthetic else None
    return FaceDataModule(**data, seed=cfg.seed, synthetic=synthetic)


def build_module(cfg: DictConfig) -> DDPMModule:
    if cfg.data.image_size != cfg.net.image_size:
        raise ConfigError(
            f"data.image_size={cfg.data.image_size} differs from net.image_size={cfg.net.image_size}; "
            "the DDPM trains at the network's resolution: set both to the same value"
        )
    container: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    return DDPMModule(
        net=container["net"],
        diffusion=container["diffusion"],
        optim=container["optim"],
        seed=cfg.seed,
        channels_last=cfg.trainer.channels_last,
        compile=cfg.trainer.compile,
        max_bad_steps=cfg.trainer.max_bad_steps,
    )


def build_evaluator(cfg: DictConfig, path: Path) -> pl.Callback:
    from lightning_dr2.callbacks.evaluator import DR2Evaluator, evaluator_options

    return DR2Evaluator(**evaluator_options(cfg.evaluator, cfg.seed, path / "eval"))


@dataclass
class TrainResult:
    run_dir: Path
    trainer: pl.Trainer
    module: DDPMModule
    export_path: Path | None
    sample_grid: Path | None
    loss_curve: Path | None


def train_ddpm(cfg: DictConfig) -> TrainResult:
    """Train (or resume) the DDPM described by `cfg`; export the EMA UNet at the end."""
    path, ckpt_path = start_run(cfg)
    datamodule = build_datamodule(cfg)
    module = build_module(cfg)
    ema = EMA(decay=cfg.ema.decay, warmup=cfg.ema.warmup)
    samples = SampleGrid(out_dir=path / "samples", **OmegaConf.to_container(cfg.sampling))
    curve = LossCurve(path / "loss_curve.png")
    checkpoints, preemption = checkpoint_callbacks(path, cfg.checkpoint.every_n_steps, cfg.checkpoint.save_top_k)
    callbacks: list[pl.Callback] = [
        ema,
        preemption,
        samples,
        curve,
        checkpoints,
        LearningRateMonitor(logging_interval="step"),
        ThroughputMonitor(batch_size_fn=lambda batch: batch["image"].shape[0]),
    ]
    if cfg.evaluator.enabled:
        callbacks.append(build_evaluator(cfg, path))
    trainer = build_trainer(
        path,
        cfg.trainer,
        callbacks,
        build_loggers(cfg, path),
        accumulate_grad_batches=cfg.trainer.accumulate_grad_batches,
        gradient_clip_val=cfg.optim.grad_clip if cfg.optim.grad_clip > 0 else None,
    )
    fit_preemptible(trainer, module, datamodule, ckpt_path, preemption)

    export_path = None
    if trainer.is_global_zero:
        net = ema_or_live(trainer, module, "net")
        export_path = export_unet(net, module.hparams.net, module.diffusion_config, path / "export" / "unet_ema.pt")
        log.info("exported EMA UNet -> %s", export_path)
    return TrainResult(
        path, trainer, module, export_path, samples.last_path, curve.path if curve.path.exists() else None
    )


def export_unet(net: torch.nn.Module, flags: dict[str, Any], diffusion: DiffusionConfig, out: str | Path) -> Path:
    """The trained UNet as an export (`exports.unet.write_unet`: state dict + {"net", "diffusion"} sidecar), so
    restore/eval sample it with the process it was trained with. NaN/Inf weights are refused, nothing written."""
    check_finite_weights(net.state_dict(), f"export to {out}")
    return write_unet(net, flags, diffusion, out)
