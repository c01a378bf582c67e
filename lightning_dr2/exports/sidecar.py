"""The export format every network shares: a plain state dict (fp32, CPU) at `<name>.pt` and a JSON sidecar at
`<name>.json` saying how to rebuild the network (the UNet's flags and process, an enhancer's generator)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lightning_dr2.files import atomic_write, write_json
from lightning_dr2.nets.loading import WeightsError


def sidecar_path(weights: str | Path) -> Path:
    """`unet_ema.pt` -> `unet_ema.json`."""
    return Path(weights).with_suffix(".json")


def write_export(net: nn.Module, out: str | Path, record: Mapping[str, Any]) -> Path:
    """Save `net`'s weights (fp32, CPU, atomically) at `out` and `record` beside it; returns `out`."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().float().cpu().contiguous() for k, v in net.state_dict().items()}
    atomic_write(out, lambda tmp: torch.save(state, tmp))
    write_json(sidecar_path(out), dict(record))
    return out


def read_sidecar(weights: str | Path, what: str) -> Any | None:
    """The parsed JSON beside `weights`, or None when there is none; an unreadable one names the file (`what`
    says whose it is, e.g. "UNet sidecar")."""
    path = sidecar_path(weights)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise WeightsError(f"could not read the {what} {path}: {err}; re-export the network or fix the file") from err
