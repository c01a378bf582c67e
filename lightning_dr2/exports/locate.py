"""Where a weights setting points: a path, a bare file name found through the weights lookup, or a default."""

from __future__ import annotations

from pathlib import Path

from lightning_dr2.weights import find_weight


def locate_weights(weights: str | None, default_name: str, weights_dir: str | None = None) -> Path:
    """A weights setting -> a file: None = `default_name` from the registry; a bare name is looked up there."""
    if weights is None:
        return find_weight(default_name, weights_dir)
    path = Path(weights)
    return path if path.exists() or path.parent != Path(".") else find_weight(weights, weights_dir)
