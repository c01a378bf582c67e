"""Loggers: metrics.csv survives a resume; W&B falls back to offline instead of stopping the run."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import pytest
import wandb
from omegaconf import OmegaConf

from lightning_dr2.config.ddpm import DDPMConfig
from lightning_dr2.loggers import (
    FallbackWandbLogger,
    HistoryCSVLogger,
    build_loggers,
    start_with_offline_fallback,
    wandb_run_id,
)


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _log(logger: HistoryCSVLogger, steps: range, key: str = "train/loss") -> None:
    for step in steps:
        logger.log_metrics({key: float(step)}, step=step)
    logger.save()


def test_metrics_csv_continues_after_resume(tmp_path):
    first = HistoryCSVLogger(save_dir=str(tmp_path), name="", version="csv")
    _log(first, range(0, 10))
    _log(first, range(10, 15), key="val/loss")  # a second key rewrites the header: history keeps both
    metrics = Path(first.log_dir) / "metrics.csv"
    # The run is killed after step 14 and resumed from a checkpoint at step 6: steps 6..14 are logged again.
    resumed = HistoryCSVLogger(save_dir=str(tmp_path), name="", version="csv")
    _log(resumed, range(6, 20))
    rows = _rows(metrics)
    train = [int(r["step"]) for r in rows if r["train/loss"]]
    assert train == list(range(0, 20)), "every step once, in order, across the resume"
    assert [float(r["train/loss"]) for r in rows if r["train/loss"]] == [float(s) for s in range(20)]
    assert not [r for r in rows if r["val/loss"]], "val rows logged after the checkpoint step are dropped"
    assert not list(Path(first.log_dir).glob("*.tmp"))
    _log(resumed, range(20, 22))  # later saves append
    assert [int(r["step"]) for r in _rows(metrics)][-2:] == [20, 21]


def test_fresh_run_writes_a_new_file(tmp_path):
    logger = HistoryCSVLogger(save_dir=str(tmp_path), name="", version="csv")
    _log(logger, range(3))
    assert [r["step"] for r in _rows(Path(logger.log_dir) / "metrics.csv")] == ["0", "1", "2"]


def test_online_start_failure_continues_offline(caplog):
    calls: list[str] = []
    kwargs = {"mode": "online", "dir": "runs/x"}

    def start():
        calls.append(kwargs["mode"])
        if kwargs["mode"] == "online":
            raise wandb.errors.UsageError("api_key not configured (no-tty)")
        return "offline-run"

    with caplog.at_level(logging.WARNING):
        assert start_with_offline_fallback(start, kwargs) == "offline-run"
    assert calls == ["online", "offline"]
    assert "wandb sync runs/x/wandb/offline-run-*" in caplog.text
    assert "UsageError" in caplog.text


def test_offline_failure_is_not_hidden():
    def start():
        raise wandb.errors.CommError("disk full")

    with pytest.raises(wandb.errors.CommError):
        start_with_offline_fallback(start, {"mode": "offline"})


def test_wandb_logger_without_key_trains_offline(tmp_path, monkeypatch):
    """The real wandb.init with mode=online and no key raises; the logger ends up with an offline run."""
    seen: list[str] = []

    def fake_init(**kwargs):
        seen.append(kwargs["mode"])
        if kwargs["mode"] == "online":
            raise wandb.errors.UsageError("api_key not configured (no-tty)")
        return object()

    monkeypatch.setattr(wandb, "init", fake_init)
    monkeypatch.setattr(wandb, "run", None)
    logger = FallbackWandbLogger(project="p", save_dir=str(tmp_path), mode="online", id="x")
    assert logger.experiment is not None
    assert logger.experiment is logger.experiment  # started once
    assert seen == ["online", "offline"]


def test_wandb_init_is_time_bounded():
    from lightning_dr2.loggers import wandb_run_kwargs

    cfg = OmegaConf.structured(DDPMConfig)
    cfg.run = "r1"
    cfg.wandb.init_timeout = 12.5
    assert wandb_run_kwargs(cfg, "online")["settings"].init_timeout == 12.5


def _online_cfg(run: str = "r1"):
    cfg = OmegaConf.structured(DDPMConfig)
    cfg.experiment, cfg.run = "tiny", run
    cfg.wandb.mode, cfg.wandb.init_timeout = "online", 1.0
    return cfg


def test_key_with_unreachable_server_trains_offline_under_the_same_id(unreachable_wandb_server, tmp_path, caplog):
    """Real wandb: the failed online start keeps its id registered in wandb-core; the offline run must still
    start (it used to fail with "run ID ... is in use") and keep the run's id, so `wandb sync` uploads it there."""
    (wandb_logger,) = [lg for lg in build_loggers(_online_cfg(), tmp_path) if isinstance(lg, FallbackWandbLogger)]
    with caplog.at_level(logging.WARNING):
        run = wandb_logger.experiment
    assert "continuing offline" in caplog.text and unreachable_wandb_server in caplog.text
    assert run.id == wandb_run_id("tiny", "r1") and run.settings.mode == "offline"
    wandb_logger.log_metrics({"train/loss": 0.5}, step=0)
    wandb_logger.finalize("success")
    (offline,) = (tmp_path / "wandb").glob(f"offline-run-*-{run.id}")
    assert list(offline.glob("*.wandb")), "the offline run wrote its records for `wandb sync`"
