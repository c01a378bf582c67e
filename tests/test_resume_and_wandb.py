"""`resume=auto` (the default) and friends, the W&B mode chosen from credentials, the stable W&B run id."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from lightning_dr2.config.ddpm import DDPMConfig
from lightning_dr2.config.loader import ConfigError, resolve_run_name
from lightning_dr2.jobs.training_run import resolve_resume
from lightning_dr2.loggers import resolve_wandb_mode, wandb_run_id


def _write_ckpt(path: Path, step: int = 7) -> None:
    """A minimal readable training checkpoint (resume=auto/true skip files that do not load)."""
    torch.save({"global_step": step}, path)


def _run_path(tmp_path: Path, with_last: bool) -> Path:
    run = tmp_path / "runs" / "exp" / "r1"
    (run / "checkpoints").mkdir(parents=True)
    if with_last:
        _write_ckpt(run / "checkpoints" / "last.ckpt")
    return run


def _resume(value) -> object:
    return OmegaConf.create({"resume": value})


def test_resume_default_is_auto() -> None:
    assert str(OmegaConf.structured(DDPMConfig).resume) == "auto"


def test_auto_resumes_from_last_when_it_exists(tmp_path: Path) -> None:
    run = _run_path(tmp_path, with_last=True)
    assert resolve_resume(_resume("auto"), run) == str(run / "checkpoints" / "last.ckpt")


def test_auto_starts_fresh_without_a_checkpoint(tmp_path: Path) -> None:
    assert resolve_resume(_resume("auto"), _run_path(tmp_path, with_last=False)) is None


@pytest.mark.parametrize("value", ["false", False, "none", ""])
def test_off_never_resumes(tmp_path: Path, value) -> None:
    assert resolve_resume(_resume(value), _run_path(tmp_path, with_last=False)) is None


@pytest.mark.parametrize("value", ["false", False])
def test_off_refuses_to_overwrite_a_run_with_checkpoints(tmp_path: Path, value) -> None:
    with pytest.raises(ConfigError, match=r"(?s)already holds 1 checkpoint.*run=NAME.*resume=auto"):
        resolve_resume(_resume(value), _run_path(tmp_path, with_last=True))


def test_true_requires_the_checkpoint(tmp_path: Path) -> None:
    run = _run_path(tmp_path, with_last=False)
    with pytest.raises(ConfigError, match="resume=true") as info:
        resolve_resume(_resume("true"), run)
    assert str(run / "checkpoints") in str(info.value)
    _write_ckpt(run / "checkpoints" / "last.ckpt")
    assert resolve_resume(_resume(True), run) == str(run / "checkpoints" / "last.ckpt")


def test_explicit_path(tmp_path: Path) -> None:
    run = _run_path(tmp_path, with_last=True)
    other = tmp_path / "elsewhere.ckpt"
    _write_ckpt(other)
    assert resolve_resume(_resume(str(other)), run) == str(other)  # wins over last.ckpt
    with pytest.raises(ConfigError, match="no such checkpoint"):
        resolve_resume(_resume(str(tmp_path / "missing.ckpt")), run)


# ---------------------------------------------------------------------------------------------------- W&B


@pytest.fixture
def no_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A home without ~/.netrc, no API key, no $WANDB_MODE."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    return home


def test_auto_is_offline_without_credentials(no_credentials: Path) -> None:
    assert resolve_wandb_mode("auto") == "offline"


def test_auto_is_online_with_an_api_key(no_credentials: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert resolve_wandb_mode("auto") == "online"


def test_auto_is_online_with_a_netrc_login(no_credentials: Path) -> None:
    netrc = no_credentials / ".netrc"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password " + "x" * 40 + "\n")
    netrc.chmod(0o600)
    assert resolve_wandb_mode("auto") == "online"
    netrc.write_text("machine example.org\n  login user\n  password secret\n")
    assert resolve_wandb_mode("auto") == "offline"  # another host's login is not a W&B login


@pytest.mark.parametrize(("env", "expected"), [("offline", "offline"), ("disabled", "disabled"), ("dryrun", "offline")])
def test_wandb_mode_env_overrides_credentials(
    no_credentials: Path, monkeypatch: pytest.MonkeyPatch, env: str, expected: str
) -> None:
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_MODE", env)
    assert resolve_wandb_mode("auto") == expected
    assert resolve_wandb_mode("online") == "online"  # an explicit mode is kept as asked


def test_unknown_mode_is_explained() -> None:
    with pytest.raises(ValueError, match="wandb.mode must be one of"):
        resolve_wandb_mode("sometimes")


def test_run_id_is_experiment_dash_run() -> None:
    assert wandb_run_id("ddpm_ffhq256", "20261130-041500") == "ddpm_ffhq256-20261130-041500"
    assert wandb_run_id("ddpm_ffhq256", "1234567") == wandb_run_id("ddpm_ffhq256", "1234567")  # requeue: same id
    assert wandb_run_id("exp", "a/b c") == "exp-a-b-c"  # characters W&B refuses become dashes
    assert len(wandb_run_id("e" * 100, "r" * 100)) == 128


def test_run_name_prefers_explicit_then_env_then_slurm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLURM_JOB_ID", "777")
    assert resolve_run_name(OmegaConf.create({"run": None})) == "777"
    assert os.environ["DR2_RUN"] == "777"  # exported for DDP children; the autouse fixture cleans it up
    monkeypatch.setenv("DR2_RUN", "from-env")
    assert resolve_run_name(OmegaConf.create({"run": None})) == "from-env"
    assert resolve_run_name(OmegaConf.create({"run": "explicit"})) == "explicit"


def test_dr2_run_does_not_leak_between_tests() -> None:
    """Runs after the test above, which exported $DR2_RUN."""
    assert "DR2_RUN" not in os.environ
