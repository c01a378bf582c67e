"""Build and run an enhancer training job (`train-enhancer`): pairs, GAN module, callbacks, loggers, Trainer.

Run directory like `train`: config.yaml, run_info, checkpoints (atomic, preemption-safe, resume=auto),
csv/W&B logs, validation grids under samples/, and at the end `export/enhancer_ema.pt` + `.json`, which
restore/eval/`DR2E.from_weights` take as `enhancer.weights=<file>`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from lightning_dr2.callbacks.ema import EMA
from lightning_dr2.callbacks.enhancer_grid import EnhancerValidationGrid
from lightning_dr2.callbacks.evaluator import EnhancerEvaluator, evaluator_options
from lightning_dr2.config.loader import ConfigError
from lightning_dr2.datasets.enhancer_data import (
    MODES,
    DR2Folder,
    EnhancerDataModule,
    OnTheFlyDR2,
    PairAugment,
    Setting,
)
from lightning_dr2.diffusion import DiffusionConfig, DiffusionRequest
from lightning_dr2.exports.restorer import write_enhancer
from lightning_dr2.exports.unet import load_unet, recorded_unet_flags, unet_identity
from lightning_dr2.jobs.training_run import (
    build_trainer,
    checkpoint_callbacks,
    fit_preemptible,
    resolve_precision,
    start_run,
)
from lightning_dr2.loggers import build_loggers
from lightning_dr2.modules.averaged import ema_or_live
from lightning_dr2.modules.enhancer import ITERATION_STEPS, EnhancerModule
from lightning_dr2.modules.guards import ENHANCER_HINT, check_finite_weights
from lightning_dr2.nets.restorers import native_size

log = logging.getLogger(__name__)

EXPORT_NAME = "enhancer_ema.pt"


def _container(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True)


def load_dr2_unet(cfg: DictConfig) -> tuple[torch.nn.Module, DiffusionConfig]:
    """The frozen UNet of `cfg.dr2` (and its process) that makes the training inputs and the eval DR2 outputs."""
    loaded = load_unet(
        cfg.dr2.unet_weights, _container(cfg.dr2.net), diffusion=DiffusionRequest(**_container(cfg.dr2.diffusion))
    )
    return loaded.module.requires_grad_(False), loaded.diffusion


def check_cache_unet(cfg: DictConfig) -> None:
    """Folder mode: the cached DR2 outputs in `data.dr2_root` must come from the recipe's DR2 UNet.

    The dr2-cache / restore manifest beside `data.dr2_root` records, per output, the sha256 of the UNet that
    made it and its image size; the outputs of that folder (`dr2`, `dr2_s1`, ...: each its own records) are
    checked, never the manifest's latest settings alone. Training an enhancer on another UNet's outputs than the
    one it will follow at inference (or be evaluated with) silently learns the wrong input distribution, so a
    mismatch is an error. "random" weights say nothing about the network: their image size is still compared.
    """
    if cfg.data.mode != "folder" or cfg.data.dr2_root is None:
        return
    folder = DR2Folder.read(cfg.data.dr2_root)
    where = folder.manifest
    if folder.records is None:
        log.warning("%s not found: cannot check that data.dr2_root was made by dr2.unet_weights", where)
        return
    records = list(folder.records.values())
    if not records:
        raise ConfigError(
            f"data.dr2_root={folder.root}: {where} lists no finished DR2 output in it (a folder left from an "
            "earlier run with other settings is listed under 'stale'). Rebuild it with dr2-cache, or point "
            "data.dr2_root at a folder the manifest lists"
        )
    sizes = sorted({r.get("image_size") for r in records}, key=str)
    if sizes != [dr2_unet_size(cfg)]:
        raise ConfigError(
            f"data.dr2_root={folder.root} holds DR2 outputs of {sizes} px ({where}), but the recipe's DR2 UNet "
            f"(dr2.unet_weights={cfg.dr2.unet_weights}, dr2.net) works at {dr2_unet_size(cfg)} px: the enhancer would "
            "learn from inputs it never sees at inference. Rebuild the cache with the recipe's UNet, or set dr2.* to "
            "the UNet that made it"
        )
    if cfg.dr2.unet_weights is None:
        return
    recorded = sorted({r.get("unet_sha256") for r in records}, key=str)
    weights = cfg.dr2.unet_weights
    configured = unet_identity(weights)
    if recorded != [configured]:
        raise ConfigError(
            f"data.dr2_root={cfg.data.dr2_root} was made by the UNet with sha256 {', '.join(map(str, recorded))} "
            f"({where}), but dr2.unet_weights={weights} has sha256 {configured}. Rebuild the cache with this UNet "
            "(`python -m lightning_dr2 dr2-cache ... unet_weights=...`) or set dr2.unet_weights to the one that made it"
        )


def dr2_unet_size(cfg: DictConfig) -> int:
    """The image size of the recipe's DR2 UNet, without loading it: its sidecar's flags, else `dr2.net`."""
    weights = cfg.dr2.unet_weights
    recorded = recorded_unet_flags(weights) if weights and weights != "random" and Path(weights).is_file() else None
    return int((recorded or cfg.dr2.net)["image_size"])


def build_pair_maker(
    cfg: DictConfig, precision: str, dr2_unet: tuple[torch.nn.Module, DiffusionConfig] | None
) -> OnTheFlyDR2 | None:
    """The DR2 run on each batch (on_the_fly mode), checked against every configured (N, tau) now."""
    if cfg.data.mode != "on_the_fly":
        return None
    from lightning_dr2.dr2.remover import DR2

    assert dr2_unet is not None, "train_enhancer loads the UNet for on_the_fly mode"
    unet, process = dr2_unet
    dtype = torch.bfloat16 if precision.startswith("bf16") else None
    dr2 = DR2(unet, respacing=cfg.dr2.respacing, diffusion=process, dtype=dtype)
    size = int(unet.image_size)
    for s in settings_of(cfg):
        dr2.check_setting(s.N, s.tau, s.omega, size)
    return OnTheFlyDR2(dr2, cfg.data.size, augment_of(cfg))


def build_evaluator(
    cfg: DictConfig, path: Path, dr2_unet: tuple[torch.nn.Module, DiffusionConfig]
) -> EnhancerEvaluator:
    """Benchmark metrics of DR2 (the frozen UNet, run once per eval image) + the EMA generator."""
    unet, process = dr2_unet
    return EnhancerEvaluator(
        **evaluator_options(cfg.evaluator, cfg.seed, path / "eval"),
        steps_per_iteration=ITERATION_STEPS,
        unet=unet,
        diffusion=process,
        enhancer_size=cfg.data.size,
    )


def settings_of(cfg: DictConfig) -> list[Setting]:
    return [Setting(int(s.N), int(s.tau), None if s.omega is None else int(s.omega)) for s in cfg.dr2.settings]


def augment_of(cfg: DictConfig) -> PairAugment:
    return PairAugment(tuple(cfg.data.blur_sigma), cfg.data.flip, cfg.data.color_jitter)


def build_datamodule(cfg: DictConfig, pair_maker: OnTheFlyDR2 | None) -> EnhancerDataModule:
    d = cfg.data
    if d.mode not in MODES:
        raise ConfigError(f"data.mode={d.mode!r}: must be one of {MODES}")
    synthetic = {"n": d.synthetic_n, "size": d.size} if d.synthetic_n > 0 else None
    return EnhancerDataModule(
        hq_root=d.hq_root,
        size=d.size,
        batch_size=d.batch_size,
        augment=augment_of(cfg),
        settings=settings_of(cfg),
        mode=d.mode,
        dr2_root=d.dr2_root,
        unet_size=dr2_unet_size(cfg) if pair_maker is None else int(pair_maker.dr2.unet.image_size),
        num_workers=d.num_workers,
        val_n=d.val_n,
        seed=cfg.seed,
        synthetic=synthetic,
        steps_per_batch=ITERATION_STEPS,
    )


def build_module(cfg: DictConfig, pair_maker: OnTheFlyDR2 | None) -> EnhancerModule:
    loss = _container(cfg.loss)
    vgg_weights = loss.pop("vgg_weights")
    module = EnhancerModule(
        generator={"name": cfg.generator.name, "options": _container(cfg.generator.options)},
        discriminator=_container(cfg.discriminator),
        loss=loss,
        optim=_container(cfg.optim),
        init_weights=cfg.generator.init_weights,
        vgg_weights=vgg_weights,
        pair_maker=pair_maker,
        max_bad_steps=cfg.trainer.max_bad_steps,
    )
    size = native_size(module.generator)
    if size != cfg.data.size:
        raise ConfigError(
            f"generator {cfg.generator.name} works at {size} px but data.size={cfg.data.size}; set them equal"
        )
    return module


@dataclass
class EnhancerTrainResult:
    run_dir: Path
    trainer: pl.Trainer
    module: EnhancerModule
    export_path: Path | None
    grid: Path | None


def train_enhancer(cfg: DictConfig) -> EnhancerTrainResult:
    """Train (or resume) the enhancer described by `cfg`; export the EMA generator at the end."""
    check_cache_unet(cfg)
    t = cfg.trainer
    precision = resolve_precision(t.precision, t.accelerator)
    if precision.startswith("16"):
        # fp16's GradScaler would treat overflowing steps as its own business while the non-finite guard
        # skips and counts them; the recipe trains in bf16 (GPU) or fp32, which need no scaler.
        raise ConfigError(f"trainer.precision={t.precision}: the enhancer trains in bf16-mixed or 32-true")
    path, ckpt_path = start_run(cfg)
    # One UNet for the on-the-fly pairs and the evaluator's DR2 stage, loaded only if one of them runs.
    needs_unet = cfg.data.mode == "on_the_fly" or cfg.evaluator.enabled
    dr2_unet = load_dr2_unet(cfg) if needs_unet else None
    pair_maker = build_pair_maker(cfg, precision, dr2_unet)
    datamodule = build_datamodule(cfg, pair_maker)
    module = build_module(cfg, pair_maker)
    ema = EMA(decay=cfg.ema.decay, warmup=cfg.ema.warmup, attr="generator")
    # Lightning counts optimizer steps: ITERATION_STEPS (D then G) per iteration of the recipe.
    checkpoints, preemption = checkpoint_callbacks(
        path, cfg.checkpoint.every_n_steps * ITERATION_STEPS, cfg.checkpoint.save_top_k
    )
    grid = EnhancerValidationGrid(path / "samples", cfg.data.val_n, ITERATION_STEPS)
    callbacks: list[pl.Callback] = [ema, grid, preemption, checkpoints]
    if cfg.evaluator.enabled:
        assert dr2_unet is not None
        callbacks.append(build_evaluator(cfg, path, dr2_unet))  # after EMA: scores the updated average
    trainer = build_trainer(
        path,
        t,
        callbacks,
        build_loggers(cfg, path),
        max_steps=t.max_steps * ITERATION_STEPS,
        num_sanity_val_steps=0,
    )
    fit_preemptible(trainer, module, datamodule, ckpt_path, preemption)

    export_path = None
    if trainer.is_global_zero:
        generator = ema_or_live(trainer, module, "generator")
        check_finite_weights(generator.state_dict(), f"export to {path / 'export' / EXPORT_NAME}", ENHANCER_HINT)
        options = _container(cfg.generator.options)
        export_path = write_enhancer(generator, cfg.generator.name, options, path / "export" / EXPORT_NAME)
        log.info("exported EMA generator -> %s", export_path)
    return EnhancerTrainResult(path, trainer, module, export_path, grid.last_path)
