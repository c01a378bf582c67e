"""What produced a run: command line, code version, packages, machine; recorded in every run directory.

A run directory that holds only its config cannot say which code or machine made its numbers. Each start
of a job (a SLURM requeue is a new start) appends one entry to `<run dir>/run_info.json`.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from lightning_utilities.core.rank_zero import rank_zero_only

from lightning_dr2.config.loader import PROJECT_ROOT
from lightning_dr2.files import write_json

PACKAGES = ("lightning_dr2", "torch", "torchvision", "pytorch-lightning", "torchmetrics", "numpy", "wandb", "lpips")
SLURM_KEYS = ("SLURM_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_NNODES", "SLURM_NTASKS", "SLURM_RESTART_COUNT")


def git_state(root: Path = PROJECT_ROOT) -> dict[str, Any]:
    """Commit and dirty flag of the checkout the code runs from; `None` where it is not a git checkout."""

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def accelerators() -> list[str]:
    if not torch.cuda.is_available():
        return []
    return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]


def cpu_model() -> str:
    """The CPU's model name (numbers differ by CPU and instruction set; see docs/reproducibility.md)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def collect_run_info() -> dict[str, Any]:
    return {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": [sys.executable, *sys.argv],
        "cwd": os.getcwd(),
        "git": git_state(),
        "packages": package_versions(),
        "python": platform.python_version(),
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_count": os.cpu_count(),
        "accelerators": accelerators(),
        "slurm": {key: os.environ[key] for key in SLURM_KEYS if key in os.environ},
    }


def record_run_info(run_path: Path) -> Path:
    """Append this start's entry to `run_path/run_info.json` (written atomically); returns the file.

    Under torchrun/srun every process runs the job's start: only global rank 0 records it.
    """
    path = Path(run_path) / "run_info.json"
    if rank_zero_only.rank != 0:
        return path
    attempts: list[dict[str, Any]] = []
    if path.is_file():
        try:
            attempts = list(json.loads(path.read_text()).get("attempts", []))
        except (json.JSONDecodeError, AttributeError):
            attempts = []  # a damaged record must not stop the run; the new one replaces it
    attempts.append(collect_run_info())
    return write_json(path, {"attempts": attempts})
