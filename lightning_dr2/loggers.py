"""Experiment loggers: W&B (offline unless credentials are configured) plus local CSV in the run dir."""

from __future__ import annotations

import csv
import logging
import netrc
import os
import re
import time
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig
from pytorch_lightning.loggers import CSVLogger, Logger, WandbLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.loggers.logger import rank_zero_experiment

from lightning_dr2.config.loader import flat_dict
from lightning_dr2.files import atomic_write

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
    """`wandb.init` arguments of a run: name `<experiment>/<run>`, stable id, group, tags, flat config.

    The run start is bounded by `wandb.init_timeout` seconds (wandb's own default waits minutes).
    """
    import wandb

    kwargs: dict[str, Any] = {
        "project": cfg.wandb.project,
        "name": f"{cfg.experiment}/{cfg.run}",
        "id": wandb_run_id(cfg.experiment, str(cfg.run)),
        "group": cfg.wandb.group or cfg.experiment,
        "tags": list(cfg.wandb.tags),
        "mode": mode,
        "resume": "allow",
        "config": flat_dict(cfg),
        "settings": wandb.Settings(init_timeout=cfg.wandb.init_timeout),
    }
    if cfg.wandb.entity:
        kwargs["entity"] = cfg.wandb.entity
    return kwargs


class _HistoryWriter(ExperimentWriter):
    """Lightning's CSV writer, except that a resumed run continues the earlier metrics.csv.

    Lightning deletes an existing metrics.csv when a logger starts; a requeued or resumed run would then
    keep only the steps after its checkpoint. Here the earlier rows are kept up to the first step the
    resumed run logs again (rows at or after it were logged after the checkpoint and are logged anew),
    so every step appears once. The first save rewrites the file atomically; later saves append.
    """

    def _check_log_dir_exists(self) -> None:
        self._history: list[dict[str, str]] | None = None
        if os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="") as fh:
                self._history = list(csv.DictReader(fh))

    def save(self) -> None:
        if self._history is None or not self.metrics:
            super().save()
            return
        first_new = min(int(row["step"]) for row in self.metrics)
        kept = [row for row in self._history if row.get("step") and int(float(row["step"])) < first_new]
        rows = kept + self.metrics
        self.metrics_keys = sorted(set().union(*rows))

        def write(tmp: Path) -> None:
            with open(tmp, "w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=self.metrics_keys)
                writer.writeheader()
                writer.writerows(rows)

        atomic_write(self.metrics_file_path, write)
        self._history = None
        self.metrics = []


CSV_VERSION = "csv"  # the CSV logger's folder in the run directory: <run>/csv/metrics.csv


def keep_earlier_history(run_path: Path) -> Path | None:
    """Move an earlier metrics.csv aside (metrics.before-<time>.csv) when a run starts again from step 0.

    `_HistoryWriter` keeps the rows before the first step a resumed run logs; a run that starts from scratch
    logs step 0 first, which would drop every earlier row. Returns the kept file, or None if there was none."""
    metrics = run_path / CSV_VERSION / ExperimentWriter.NAME_METRICS_FILE
    if not metrics.is_file():
        return None
    kept = metrics.with_name(f"metrics.before-{time.strftime('%Y%m%d-%H%M%S')}.csv")
    os.replace(metrics, kept)
    return kept


class HistoryCSVLogger(CSVLogger):
    """CSVLogger whose metrics.csv survives a resume (see `_HistoryWriter`)."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            os.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _HistoryWriter(log_dir=self.log_dir)
        return self._experiment


T = TypeVar("T")


def start_with_offline_fallback(start: Callable[[], T], init_kwargs: MutableMapping[str, Any]) -> T:
    """Start a W&B run; if an online start fails (no key, bad key, no network, timeout), continue offline.

    W&B must never stop a run: the failure is said once, with the command that uploads the run later.
    `init_kwargs` (the `wandb.init` arguments `start` uses) is switched to offline in place. Any error of the
    online start falls back (wandb raises more than its own error classes); an offline start's error is raised.

    The offline run keeps the run's id (a requeue resumes it, results.json names it, `wandb sync` uploads it
    under it). wandb-core keeps the failed online start registered under that id and refuses a second start
    with it ("run ID ... is in use"), so the W&B service is torn down first: the offline run starts in a
    fresh one. No other W&B run is active here (the jobs start one at a time), so nothing else is ended.
    """
    import wandb

    try:
        return start()
    except Exception as err:
        if init_kwargs.get("mode") != "online":
            raise
        where = Path(init_kwargs.get("dir") or init_kwargs.get("save_dir") or ".") / "wandb" / "offline-run-*"
        log.warning(
            "W&B could not start online (%s: %s); continuing offline. Upload later with: wandb sync %s",
            type(err).__name__,
            str(err).splitlines()[0] if str(err) else "",
            where,
        )
        wandb.teardown()
        init_kwargs["mode"] = "offline"
        return start()


class FallbackWandbLogger(WandbLogger):
    """Lightning's WandbLogger whose online start falls back to offline instead of failing the run."""

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        if self._experiment is not None:
            return self._experiment

        def start() -> Any:
            self._experiment = None
            return super(FallbackWandbLogger, self).experiment

        return start_with_offline_fallback(start, self._wandb_init)


def build_loggers(cfg: DictConfig, run_path: Path) -> list[Logger]:
    loggers: list[Logger] = [HistoryCSVLogger(save_dir=str(run_path), name="", version=CSV_VERSION)]
    mode = resolve_wandb_mode(cfg.wandb.mode)
    if mode == "disabled":
        return loggers
    kwargs = {**wandb_run_kwargs(cfg, mode), "save_dir": str(run_path)}
    log.info("W&B logging %s (mode=%s, id=%s)", cfg.wandb.project, mode, kwargs["id"])
    loggers.append(FallbackWandbLogger(**kwargs))
    return loggers
