"""`python -m lightning_dr2 export CKPT --out FILE`: the EMA network of a training checkpoint as an export.

Both training jobs' checkpoints export: `train`'s (the EMA UNet + its {"net", "diffusion"} sidecar, what
`unet_weights=` takes) and `train-enhancer`'s (the EMA generator + its {"generator", "options"} sidecar, what
`enhancer.weights=` takes). Which one a checkpoint is, its hyper-parameters say. Weights a diverged run left
(NaN/Inf, or exploded beyond what the training guard allows) are refused, as at the end of training.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from lightning_dr2.diffusion import DiffusionConfig
from lightning_dr2.exports.restorer import write_enhancer
from lightning_dr2.exports.sidecar import sidecar_path
from lightning_dr2.jobs.train_ddpm import export_unet
from lightning_dr2.modules.guards import ENHANCER_HINT, NonFiniteTrainingError, check_finite_weights
from lightning_dr2.nets.loading import WeightsError, load_into
from lightning_dr2.nets.restorers import build_restorer

log = logging.getLogger(__name__)


def export_checkpoint(ckpt: str | Path, out: str | Path) -> Path:
    """Export the EMA network of a Lightning checkpoint written by `train` or `train-enhancer` (falls back to the
    raw training weights when the checkpoint has no EMA state)."""
    checkpoint = _read_training_checkpoint(ckpt)
    hparams = checkpoint["hyper_parameters"]
    try:
        if "net" in hparams and "diffusion" in hparams:
            return _export_unet(ckpt, checkpoint, out)
        if "generator" in hparams:
            return _export_enhancer(ckpt, checkpoint, out)
    except NonFiniteTrainingError as err:  # a bad input file here, not a failed job: a user error
        raise WeightsError(f"{ckpt}: {err}") from None
    raise WeightsError(
        f"{ckpt} is a Lightning checkpoint of neither `train` (hyper-parameters net, diffusion) nor `train-enhancer` "
        f"(generator); its hyper-parameters are {sorted(hparams)}"
    )


def _read_training_checkpoint(ckpt: str | Path) -> dict[str, Any]:
    try:
        checkpoint = torch.load(ckpt, map_location="cpu", weights_only=True)  # plain containers and tensors only
    except FileNotFoundError:
        raise FileNotFoundError(f"checkpoint {ckpt} does not exist") from None
    except Exception as err:  # torch.load raises many types for files that are not (safe) torch checkpoints
        raise WeightsError(f"{ckpt} cannot be read as a training checkpoint (torn or truncated?): {err}") from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("hyper_parameters"), dict):
        raise WeightsError(_not_a_training_checkpoint(ckpt, checkpoint))
    return checkpoint


def _ema_or_raw(ckpt: str | Path, checkpoint: Mapping[str, Any], prefix: str) -> dict[str, torch.Tensor]:
    """The EMA callback's weights, else the module's `<prefix>.*` training weights (with a warning)."""
    ema_state = next((v for k, v in checkpoint.get("callbacks", {}).items() if k.startswith("EMA")), None)
    if ema_state is not None:
        return ema_state["weights"]
    log.warning("%s has no EMA state; exporting the raw training weights", ckpt)
    return {k[len(prefix) :]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}


def _export_unet(ckpt: str | Path, checkpoint: Mapping[str, Any], out: str | Path) -> Path:
    from lightning_dr2.nets.unet import UNet

    hparams = checkpoint["hyper_parameters"]
    flags = hparams["net"]
    net = load_into(UNet.from_flags(flags), _ema_or_raw(ckpt, checkpoint, "net."), f"{ckpt} (EMA UNet)")
    return export_unet(net, flags, DiffusionConfig.from_dict(hparams["diffusion"], source=f"{ckpt} diffusion"), out)


def _export_enhancer(ckpt: str | Path, checkpoint: Mapping[str, Any], out: str | Path) -> Path:
    generator = checkpoint["hyper_parameters"]["generator"]
    name, options = generator["name"], dict(generator.get("options", {}))
    net = load_into(build_restorer(name, options), _ema_or_raw(ckpt, checkpoint, "generator."), f"{ckpt} (EMA {name})")
    check_finite_weights(net.state_dict(), f"export to {out}", ENHANCER_HINT)
    return write_enhancer(net, name, options, out)


def _not_a_training_checkpoint(ckpt: str | Path, content: Any) -> str:
    """Why `export` cannot use `content`, and what the user can do with it instead."""
    what = f"{ckpt} is not a Lightning training checkpoint written by `train` or `train-enhancer` (no hyper_parameters)"
    if isinstance(content, dict) and content and all(isinstance(v, torch.Tensor) for v in content.values()):
        return (
            f"{what}; it is a plain state dict of {len(content)} tensors, i.e. already exported weights. Use it "
            f"directly as unet_weights={ckpt}, with a sidecar {sidecar_path(ckpt)} holding "
            '{"net": {...UNet flags}, "diffusion": {...}} when it is not the published DR2 FFHQ-256 network'
        )
    return f"{what}; export takes the .ckpt files under runs/<experiment>/<run>/checkpoints/"
