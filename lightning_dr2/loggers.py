"""Experiment loggers: W&B (offline unless credentials are configured) plus local CSV in the run dir."""

from __future__ import annotations

import logging
import netrc
import os
import re
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from pytorch_lightning.loggers import CSVLogger, Logger

from lightning_dr2.config import flat_dict

log = logging.getLogger(__name__)

WANDB_MODES = ("auto", "online", "offline", "disabled")


def wandb_credentials_present() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def resolve_wandb_mode(mode: str) -> str:
    """`auto` -> $WANDB_MODE if set, else online with credentials, else offline (sync later with `wandb sync`)."""
    if mode not in WANDB_MODES:
        raise ValueError(f"wandb.mode must be one of {WANDB_MODES}, got '{mode}'")
    if mode != "auto":
        return mode
    env = os.environ.get("WANDB_MODE")
    if env in ("online", "offline", "disabled", "dryrun"):
        return "offline" if env == "dryrun" else env
    return "online" if wandb_credentials_present() else "offline"


def wandb_run_id(experiment: str, run: str) -> str:
    """Stable W&B id from the experiment and run names: a requeued SLURM job continues the same W&B run.

    The experiment is part of the id so two recipes started in the same second (or job) never share a run.
    """
    return re.sub(r"[^A-Za-z0-9_.-]", "-", f"{experiment}-{run}")[:128]


def wandb_run_kwargs(cfg: DictConfig, mode: str) -> dict[str, Any]:
    """`wandb.init` arguments of a run: name `<experiment>/<run>`, stable id, group, tags, flat config."""
    kwargs: dict[str, Any] = {
        "project": cfg.wandb.project,
        "name": f"{cfg.experiment}/{cfg.run}",
        "id": wandb_run_id(cfg.experiment, str(cfg.run)),
        "group": cfg.wandb.group or cfg.experiment,
        "tags": list(cfg.wandb.tags),
        "mode": mode,
        "resume": "allow",
        "config": flat_dict(cfg),
    }
    if cfg.wandb.entity:
        kwargs["entity"] = cfg.wandb.entity
    return kwargs


def build_loggers(cfg: DictConfig, run_path: Path) -> list[Logger]:
    loggers: list[Logger] = [CSVLogger(save_dir=str(run_path), name="", version="csv")]
    mode = resolve_wandb_mode(cfg.wandb.mode)
    if mode == "disabled":
        return loggers
    from pytorch_lightning.loggers import WandbLogger

    kwargs = {**wandb_run_kwargs(cfg, mode), "save_dir": str(run_path)}
    log.info("W&B logging %s (mode=%s, id=%s)", cfg.wandb.project, mode, kwargs["id"])
    loggers.append(WandbLogger(**kwargs))
    return loggers
