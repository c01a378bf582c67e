"""Process pools that are safe to start from a process already running torch threads."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor


def spawn_pool(workers: int, initializer: Callable[[], None] | None = None) -> ProcessPoolExecutor:
    """A `ProcessPoolExecutor` using spawn: forking a process whose torch/OpenMP threads are running
    can deadlock the children (seen with the test suite), spawn cannot."""
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=initializer)
