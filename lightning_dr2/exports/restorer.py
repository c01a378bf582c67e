"""Restoration networks from files: a registered network (`nets.restorers.RESTORERS`) from its released file, a
path or "random", and enhancer exports (write and read).

An enhancer export is a plain state dict + `<file>.json` = {"generator": name, "options": {...}}: `train-enhancer`
writes it (`export/enhancer_ema.pt`), and `enhancer.weights=<file>` is all a user types to run it (its JSON, not
`enhancer.name`, picks the network).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from lightning_dr2.exports.locate import RANDOM, locate_weights, weights_identity
from lightning_dr2.exports.sidecar import read_sidecar, sidecar_path, write_export
from lightning_dr2.nets.loading import WeightsError, load_into, read_state_dict
from lightning_dr2.nets.restorers import RESTORERS, build_restorer
from lightning_dr2.nets.sparnet import fold_spectral_norm

NONE = "none"  # enhancer.name=none: DR2 alone, its output upsampled


@dataclass(frozen=True)
class LoadedRestorer:
    """What `load_restorer` loaded: the network (eval mode, ready for inference), its file (None for random
    weights), the file's sha256 ("random"), an export's JSON as read (None otherwise), the registry name of the
    network built (an export's generator), the options it was built with, and its native square size."""

    module: nn.Module
    path: Path | None
    sha256: str
    record: dict[str, Any] | None
    name: str
    options: dict[str, Any]
    size: int | None


def write_enhancer(net: nn.Module, name: str, options: Mapping[str, Any], out: str | Path) -> Path:
    """Save `net`'s weights (fp32, CPU) at `out` and its generator description at `<out>.json`."""
    return write_export(net, out, {"generator": name, "options": dict(options)})


def read_enhancer_sidecar(weights: str | Path | None) -> dict[str, Any] | None:
    """The {"generator", "options"} JSON next to an exported enhancer, or None when there is none."""
    if weights is None or not Path(weights).is_file():
        return None
    record = read_sidecar(weights, "enhancer description")
    if not isinstance(record, dict) or "generator" not in record:
        return None  # no JSON, or some other JSON (e.g. a UNet sidecar): not an exported enhancer
    if not isinstance(record.get("options", {}), dict):
        raise WeightsError(f"{sidecar_path(weights)}: 'options' must be a mapping, got {record['options']!r}")
    return record


def restorer_name(name: str, weights: str | None) -> str:
    """The network an `enhancer.name` / `enhancer.weights` pair runs, without loading it: an export's generator
    (its JSON picks the network), else `name`."""
    record = read_enhancer_sidecar(weights) if name != NONE else None
    return record["generator"] if record is not None else name


def load_restorer(
    name: str, weights: str | None = None, options: Mapping[str, Any] | None = None, weights_dir: str | None = None
) -> LoadedRestorer | None:
    """A restoration network ready for inference, or None for `none`.

    `weights`: a train-enhancer export (its JSON names the network and wins over `name`; `options` given as well
    must agree with it), "random" (random initialisation), None (the registry's released file for `name`) or a
    file. A released or given file decides the options its keys fix (e.g. spectral norm) over `options`.
    """
    if name == NONE:
        return None
    record = read_enhancer_sidecar(weights)
    if record is not None:
        return _load_export(Path(weights), record, options)  # type: ignore[arg-type]
    spec = RESTORERS[name]
    if weights == RANDOM:
        built = {**spec.defaults, **dict(options or {})}
        return _loaded(build_restorer(name, built), None, RANDOM, None, name, built, spec.finalize)
    if weights is None and spec.weights is None:
        raise WeightsError(
            f"restoration network {name!r} has no released weights: give enhancer.weights=FILE "
            "(e.g. a train-enhancer export) or enhancer.weights=random for tests"
        )
    path = locate_weights(weights, spec.weights, weights_dir)  # type: ignore[arg-type]
    state = read_state_dict(path)
    built = {**spec.defaults, **dict(options or {}), **spec.options_for_file(state)}
    net = load_into(build_restorer(name, built), state, path)
    return _loaded(net, path, weights_identity(path), None, name, built, spec.finalize)


def _load_export(path: Path, record: dict[str, Any], options: Mapping[str, Any] | None) -> LoadedRestorer:
    """Rebuild the generator the export's JSON names, load the weights strictly, fold spectral norm."""
    recorded = dict(record.get("options", {}))
    differing = sorted(k for k, v in dict(options or {}).items() if k not in recorded or recorded[k] != v)
    if differing:
        raise ValueError(
            f"enhancer.options {differing} differ from what {sidecar_path(path)} records "
            f"({recorded}); the exported network is built as recorded: drop enhancer.options"
        )
    generator = record["generator"]
    net = load_into(build_restorer(generator, recorded), read_state_dict(path), path)
    return _loaded(net, path, weights_identity(path), record, generator, recorded, fold_spectral_norm)


def _loaded(
    net: nn.Module, path: Path | None, sha256: str, record: Any, name: str, options: dict[str, Any], finalize: Any
) -> LoadedRestorer:
    module = finalize(net.eval())
    size = getattr(module, "size", None)
    return LoadedRestorer(module, path, sha256, record, name, options, None if size is None else int(size))
