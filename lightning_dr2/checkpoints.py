"""Training checkpoints that survive kills: atomic writes, and resume from the newest readable one.

A job killed while Lightning writes `last.ckpt` leaves a torn file; Lightning then fails to resume with a
traceback. Here every checkpoint is written to a temporary name and renamed into place (a rename is
atomic on one file system), and `resume=auto` takes the newest checkpoint that loads, reporting and
skipping torn ones, whichever saved it: periodic, `last`, a signal (preemption) or SLURM's requeue
(`hpc_ckpt_*.ckpt`, which Lightning writes in the run directory).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins import TorchCheckpointIO

from lightning_dr2.files import atomic_write

log = logging.getLogger(__name__)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, through a temporary file and an atomic rename."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        write = super().save_checkpoint
        atomic_write(path, lambda tmp: write(checkpoint, tmp, storage_options))


def checkpoint_candidates(run_path: Path) -> list[Path]:
    """Every training checkpoint a run may resume from."""
    found = list((run_path / "checkpoints").glob("*.ckpt")) + list(run_path.glob("hpc_ckpt_*.ckpt"))
    return [p for p in found if p.is_file()]


def read_step(path: Path) -> tuple[int | None, str | None]:
    """(global step, None) of a checkpoint that loads, or (None, why not): torn, truncated, not a checkpoint."""
    try:
        # Our own training checkpoints (Lightning loads them with full unpickling on resume anyway).
        state = torch.load(path, map_location="cpu", mmap=True, weights_only=False)
        return int(state["global_step"]), None
    except Exception as err:  # a torn file raises whatever the zip/pickle reader hits first
        return None, f"{type(err).__name__}: {err}"


def checkpoint_step(path: Path) -> int | None:
    """The global step stored in a checkpoint, or None when the file does not load (reported, skipped)."""
    step, problem = read_step(path)
    if problem is not None:
        log.warning("checkpoint %s does not load (%s); skipping it", path, problem)
    return step


def newest_valid_checkpoint(run_path: Path) -> Path | None:
    """The checkpoint with the highest step that loads (newest file first among equal steps), or None."""
    scored = []
    for path in checkpoint_candidates(run_path):
        step = checkpoint_step(path)
        if step is not None:
            scored.append((step, path.stat().st_mtime_ns, path))
    if not scored:
        return None
    step, _, path = max(scored)
    log.info("resuming from %s (step %d)", path, step)
    return path


def remove_stale_temp_files(run_path: Path) -> list[Path]:
    """Delete temporary checkpoint files left by a process killed mid-write."""
    stale = list((run_path / "checkpoints").glob(".*.tmp"))  # atomic_write's temporary names
    for path in stale:
        path.unlink(missing_ok=True)
        log.info("removed the partial checkpoint %s left by an interrupted write", path)
    return stale
