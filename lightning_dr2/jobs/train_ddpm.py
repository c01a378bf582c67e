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
from lightning_dr2.dr2.sidecar import sidecar_path, write_sidecar
from lightning_dr2.files import atomic_write
from lightning_dr2.jobs.training_run import build_trainer, checkpoint_callbacks, fit_preemptible, start_run
from lightning_dr2.loggers import build_loggers
from lightning_dr2.modules.averaged import ema_or_live
from lightning_dr2.modules.ddpm import DDPMModule
from lightning_dr2.modules.guards import check_finite_weights
from lightning_dr2.nets.loading import WeightsError, load_into

log = logging.getLogger(__name__)


def build_datamodule(cfg: DictConfig) -> FaceDataModule:
    synthetic = {"n": cfg.data.synthetic_n, "size": cfg.data.image_size} if cfg.data.synthetic else None
    return FaceDataModule(
        root=cfg.data.root,
        image_size=cfg.data.image_size,
        batch_size=cfg.data.batch_size,
        num_workers=cfg.data.num_workers,
        val_fraction=cfg.data.val_fraction,
        val_max=cfg.data.val_max,
        flip=cfg.data.flip,
        seed=cfg.seed,
        synthetic=synthetic,
    )


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
    samples = SampleGrid(
        out_dir=path / "samples",
        every_n_steps=cfg.sampling.every_n_steps,
        num_samples=cfg.sampling.num_samples,
        method=cfg.sampling.method,
        steps=cfg.sampling.steps,
        eta=cfg.sampling.eta,
        seed=cfg.sampling.seed,
    )
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
    """Write a plain state dict (loads into `UNet.from_flags(flags)` with strict=True) and its sidecar.

    The sidecar `<out>.json` = {"net": flags, "diffusion": the process it was trained with} (see
    `dr2.sidecar`), so restore/eval sample it with that process. NaN/Inf weights are refused.
    """
    out = Path(out)
    state = {k: v.detach().float().cpu().contiguous() for k, v in net.state_dict().items()}
    check_finite_weights(state, f"export to {out}")
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda tmp: torch.save(state, tmp))
    write_sidecar(out, flags, diffusion)
    return out


def export_checkpoint(ckpt: str | Path, out: str | Path) -> Path:
    """Export the EMA UNet of a Lightning checkpoint written by `train_ddpm` (falls back to raw weights)."""
    try:
        checkpoint = torch.load(ckpt, map_location="cpu", weights_only=True)  # plain containers and tensors only
    except FileNotFoundError:
        raise FileNotFoundError(f"checkpoint {ckpt} does not exist") from None
    except Exception as err:  # torch.load raises many types for files that are not (safe) torch checkpoints
        raise WeightsError(f"{ckpt} cannot be read as a training checkpoint: {err}") from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("hyper_parameters"), dict):
        raise WeightsError(_not_a_training_checkpoint(ckpt, checkpoint))
    hparams = checkpoint["hyper_parameters"]
    flags = hparams["net"]
    ema_state = next((v for k, v in checkpoint.get("callbacks", {}).items() if k.startswith("EMA")), None)
    if ema_state is not None:
        state = ema_state["weights"]
    else:
        log.warning("%s has no EMA state; exporting the raw training weights", ckpt)
        state = {k[len("net.") :]: v for k, v in checkpoint["state_dict"].items() if k.startswith("net.")}
    from lightning_dr2.nets.unet import UNet

    net = load_into(UNet.from_flags(flags), state, f"{ckpt} (EMA UNet)")
    return export_unet(net, flags, DiffusionConfig.from_dict(hparams["diffusion"], source=f"{ckpt} diffusion"), out)


def _not_a_training_checkpoint(ckpt: str | Path, content: Any) -> str:
    """Why `export` cannot use `content`, and what the user can do with it instead."""
    what = f"{ckpt} is not a Lightning training checkpoint written by `train` (it has no hyper_parameters)"
    if isinstance(content, dict) and content and all(isinstance(v, torch.Tensor) for v in content.values()):
        return (
            f"{what}; it is a plain state dict of {len(content)} tensors, i.e. already exported weights. Use it "
            f"directly as unet_weights={ckpt}, with a sidecar {sidecar_path(ckpt)} holding "
            '{"net": {...UNet flags}, "diffusion": {...}} when it is not the published DR2 FFHQ-256 network'
        )
    return f"{what}; export takes the .ckpt files under runs/<experiment>/<run>/checkpoints/"
