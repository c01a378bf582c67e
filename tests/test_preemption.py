"""Preemption: SIGTERM / SIGUSR1 on a real training process save a checkpoint at the step reached and exit
with a message; resume=auto takes the newest readable checkpoint and equals the uninterrupted run; torn
checkpoints are skipped; partial writes never replace a good file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import TINY_DDPM_NET
from omegaconf import OmegaConf

from lightning_dr2.checkpoints import AtomicCheckpointIO, newest_valid_checkpoint, remove_stale_temp_files
from lightning_dr2.datasets.synthetic import generate_faces
from lightning_dr2.jobs.training_run import resolve_resume

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    *TINY_DDPM_NET,
    "data.synthetic=false",
    "data.batch_size=4",
    "data.val_max=4",
    "data.num_workers=0",
    "wandb.mode=disabled",
    "trainer.progress_bar=false",
    "trainer.val_check_interval=1000000",
    "trainer.limit_val_batches=0",
    "sampling.num_samples=2",
    "sampling.steps=2",
    "sampling.every_n_steps=0",
    "checkpoint.every_n_steps=5",
]


@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("faces")
    generate_faces(root, n=12, size=16, seed=5)
    return root


def _train_cmd(faces: Path, runs: Path, max_steps: int) -> list[str]:
    args = [*TINY, f"data.root={faces}", f"runs_dir={runs}", "run=r", f"trainer.max_steps={max_steps}"]
    return [sys.executable, "-m", "lightning_dr2", "train", "ddpm_tiny", *args]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "DR2_RUN"))}
    env["PYTHONPATH"] = str(ROOT)
    return env


def _interrupt(faces: Path, runs: Path, signum: int) -> subprocess.CompletedProcess:
    """Start a long training, send `signum` once the first periodic checkpoint exists, wait for the exit."""
    proc = subprocess.Popen(
        _train_cmd(faces, runs, 100_000), cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    first = runs / "ddpm_tiny" / "r" / "checkpoints" / "step0000005.ckpt"
    deadline = time.time() + 240
    while not first.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert first.exists(), "training never reached its first checkpoint"
    proc.send_signal(signum)
    out, _ = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out.decode(), "")


def _exported(runs: Path) -> dict[str, torch.Tensor]:
    """The EMA UNet a finished run exports (it depends on every step's live weights)."""
    return torch.load(runs / "ddpm_tiny" / "r" / "export" / "unet_ema.pt", map_location="cpu", weights_only=True)


def _check_stopped_with_checkpoint(result: subprocess.CompletedProcess, runs: Path) -> int:
    """The process said why it stopped, exited 143, saved one signal checkpoint and nothing partial."""
    assert result.returncode == 128 + signal.SIGTERM, result.stdout[-3000:]
    assert "training stopped by a signal at step" in result.stdout
    ckpts = runs / "ddpm_tiny" / "r" / "checkpoints"
    saved = sorted(ckpts.glob("signal-step*.ckpt"))
    assert len(saved) == 1, result.stdout[-3000:]
    step = int(saved[0].stem.removeprefix("signal-step"))
    assert step >= 5
    assert torch.load(saved[0], map_location="cpu", weights_only=False)["global_step"] == step
    assert not list(ckpts.glob(".*.tmp"))
    assert not (runs / "ddpm_tiny" / "r" / "export").exists(), "an interrupted run exports nothing"
    return step


@pytest.mark.slow
def test_sigusr1_outside_slurm_saves_checkpoint_and_exits_with_message(faces, tmp_path):
    _check_stopped_with_checkpoint(_interrupt(faces, tmp_path, signal.SIGUSR1), tmp_path)


@pytest.mark.slow
def test_sigterm_then_resume_equals_uninterrupted_run(faces, tmp_path):
    interrupted, reference = tmp_path / "a", tmp_path / "b"
    stopped = _check_stopped_with_checkpoint(_interrupt(faces, interrupted, signal.SIGTERM), interrupted)
    total = stopped + 3
    # The resumed and the uninterrupted run are independent processes: run them side by side.
    procs = []
    for runs in (interrupted, reference):
        runs.mkdir(exist_ok=True)
        with open(runs / "train.log", "w") as log:
            cmd = _train_cmd(faces, runs, total)
            procs.append((subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=log, stderr=subprocess.STDOUT), runs))
    for proc, runs in procs:
        assert proc.wait(timeout=300) == 0, (runs / "train.log").read_text()[-5000:]
    a, b = _exported(interrupted), _exported(reference)
    assert a.keys() == b.keys()
    # Same machine, same batch composition: equal up to fp32 rounding (docs/reproducibility.md).
    for key in b:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)


def _fake_ckpt(path: Path, step: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"global_step": step, "state_dict": {}}, path)
    return path


def test_resume_auto_takes_newest_valid_and_skips_torn(tmp_path, caplog):
    run = tmp_path / "run"
    _fake_ckpt(run / "checkpoints" / "step0000010.ckpt", 10)
    good = _fake_ckpt(run / "checkpoints" / "signal-step0000015.ckpt", 15)
    torn = _fake_ckpt(run / "checkpoints" / "last.ckpt", 20)
    torn.write_bytes(torn.read_bytes()[:40])  # killed mid-write by an older, non-atomic writer
    cfg = OmegaConf.create({"resume": "auto"})
    assert resolve_resume(cfg, run) == str(good)
    assert "last.ckpt does not load" in caplog.text
    _fake_ckpt(run / "hpc_ckpt_1.ckpt", 30)  # Lightning's SLURM requeue checkpoint
    assert resolve_resume(cfg, run) == str(run / "hpc_ckpt_1.ckpt")


def test_resume_auto_on_a_new_run_starts_fresh_and_true_requires_a_checkpoint(tmp_path):
    from lightning_dr2.config.loader import ConfigError

    assert resolve_resume(OmegaConf.create({"resume": "auto"}), tmp_path / "new") is None
    with pytest.raises(ConfigError, match="holds no readable checkpoint"):
        resolve_resume(OmegaConf.create({"resume": "true"}), tmp_path / "new")
    assert newest_valid_checkpoint(tmp_path / "new") is None


def test_atomic_checkpoint_write_never_leaves_a_partial_file(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    target = tmp_path / "last.ckpt"
    io.save_checkpoint({"global_step": 1}, target)
    before = target.read_bytes()

    def crash(self, checkpoint, path, storage_options=None):
        Path(path).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr("lightning_fabric.plugins.TorchCheckpointIO.save_checkpoint", crash)
    with pytest.raises(OSError):
        io.save_checkpoint({"global_step": 2}, target)
    assert target.read_bytes() == before
    assert not list(tmp_path.glob(".*.tmp"))


def test_stale_temp_files_are_cleaned(tmp_path):
    stale = tmp_path / "checkpoints" / ".last.ckpt.123.tmp"
    stale.parent.mkdir()
    stale.write_bytes(b"x")
    assert remove_stale_temp_files(tmp_path) == [stale]
    assert not stale.exists()
