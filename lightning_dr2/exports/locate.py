"""Where a weights setting points (a path, a bare file name found through the weights lookup, or a default), and
which file it is (its sha256, what manifests record)."""

from __future__ import annotations

import functools
from pathlib import Path

from lightning_dr2.weights import find_weight, sha256sum

RANDOM = "random"  # weights="random": random initialisation (tests, benchmarks), never a silent default


def locate_weights(weights: str | None, default_name: str, weights_dir: str | None = None) -> Path:
    """A weights setting -> a file: None = `default_name` from the registry; a bare name is looked up there."""
    if weights is None:
        return find_weight(default_name, weights_dir)
    path = Path(weights)
    return path if path.exists() or path.parent != Path(".") else find_weight(weights, weights_dir)


@functools.lru_cache(maxsize=16)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    return sha256sum(path)


def weights_identity(path: str | Path) -> str:
    """The sha256 manifests record for a weight file; cached per (file, size, mtime): an eval over many splits,
    or a check before a load, reads a 400 MB checkpoint's hash once."""
    stat = Path(path).stat()
    return _sha256_cached(str(path), stat.st_size, stat.st_mtime_ns)
