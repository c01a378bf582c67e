"""Exported enhancers: a plain state dict + `<file>.json` = {"generator": name, "options": {...}}.

`train-enhancer` writes them (`export/enhancer_ema.pt`); DR2E reads the JSON to rebuild the right
network from `nets.restorers`, so `enhancer.weights=<file>` is all a user types.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lightning_dr2.dr2.sidecar import sidecar_path
from lightning_dr2.files import atomic_write, write_json
from lightning_dr2.nets.loading import WeightsError, load_into, read_state_dict
from lightning_dr2.nets.restorers import build_restorer
from lightning_dr2.nets.sparnet import fold_spectral_norm


def write_enhancer(net: nn.Module, name: str, options: Mapping[str, Any], out: str | Path) -> Path:
    """Save `net`'s weights (fp32, CPU) at `out` and its generator description at `<out>.json`."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().float().cpu().contiguous() for k, v in net.state_dict().items()}
    atomic_write(out, lambda tmp: torch.save(state, tmp))
    write_json(sidecar_path(out), {"generator": name, "options": dict(options)})
    return out


def read_enhancer_sidecar(weights: str | Path | None) -> dict[str, Any] | None:
    """The {"generator", "options"} JSON next to an exported enhancer, or None when there is none."""
    if weights is None or not Path(weights).is_file():
        return None
    path = sidecar_path(weights)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise WeightsError(f"{path}: unreadable enhancer description ({err}); re-export the enhancer") from err
    if not isinstance(record, dict) or "generator" not in record:
        return None  # some other JSON (e.g. a UNet sidecar): not an exported enhancer
    if not isinstance(record.get("options", {}), dict):
        raise WeightsError(f"{path}: 'options' must be a mapping, got {record['options']!r}")
    return record


def load_exported_enhancer(weights: str | Path, options: Mapping[str, Any] | None = None) -> nn.Module:
    """Rebuild the generator its JSON names, load the weights strictly, fold spectral norm, eval mode.

    The JSON wins; `options` given as well must agree with it (an error names the differing keys).
    """
    record = read_enhancer_sidecar(weights)
    if record is None:
        raise WeightsError(f"{weights} has no enhancer description {sidecar_path(weights)}")
    recorded = dict(record.get("options", {}))
    differing = sorted(k for k, v in dict(options or {}).items() if k not in recorded or recorded[k] != v)
    if differing:
        raise ValueError(
            f"enhancer.options {differing} differ from what {sidecar_path(weights)} records "
            f"({recorded}); the exported network is built as recorded: drop enhancer.options"
        )
    net = build_restorer(record["generator"], recorded)
    load_into(net, read_state_dict(weights), weights)
    return fold_spectral_norm(net.eval())
