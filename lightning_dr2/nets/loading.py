"""Loading foreign weight files (published checkpoints, exported state dicts) safely and loudly.

Every foreign file goes through `torch.load(..., weights_only=True)`; a file that is not a state dict of
the expected network fails with an error naming the file, the missing/unexpected keys and what was
expected, instead of PyTorch's generic message.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from torch import nn

# Containers other projects wrap their state dicts in (Lightning, BasicSR, guided-diffusion forks).
_WRAPPER_KEYS = ("state_dict", "params_ema", "params", "model", "net", "ema")


class WeightsError(RuntimeError):
    """A weight file is missing, unreadable, or not a state dict of the expected network."""


def read_state_dict(path: str | Path, *, strip_prefixes: Iterable[str] = ("module.",)) -> dict[str, torch.Tensor]:
    """Read a state dict from `path` (weights_only), unwrapping common containers and DataParallel prefixes."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weight file not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle errors, truncated zips, non-torch files
        raise WeightsError(
            f"could not read {path} as a PyTorch weights file ({type(err).__name__}: {err}). "
            "Is it truncated or not a state dict? Re-download it and check its sha256 "
            "(`python -m lightning_dr2 weights`)."
        ) from err
    for key in _WRAPPER_KEYS:
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping) and not _is_tensor_map(obj):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not _is_tensor_map(obj):
        raise WeightsError(
            f"{path} does not hold a state dict (a mapping of names to tensors); got {type(obj).__name__}"
        )
    out: dict[str, torch.Tensor] = {}
    prefixes = tuple(strip_prefixes)
    for name, value in obj.items():
        for prefix in prefixes:
            if name.startswith(prefix):
                name = name[len(prefix) :]
                break
        out[name] = value
    return out


def _is_tensor_map(obj: Mapping) -> bool:
    return len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())


def load_into(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str | Path = "<state dict>"
) -> nn.Module:
    """`model.load_state_dict(state_dict, strict=True)` with an error that says what does not match and why."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    shape_mismatch = [
        f"{k}: file {tuple(state_dict[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in state_dict and tuple(state_dict[k].shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or shape_mismatch:
        raise WeightsError(
            f"{source} is not a state dict of {type(model).__name__} as configured "
            f"({len(expected)} keys expected, {len(state_dict)} in the file).\n"
            f"  missing keys ({len(missing)}): {_preview(missing)}\n"
            f"  unexpected keys ({len(unexpected)}): {_preview(unexpected)}\n"
            f"  shape mismatches ({len(shape_mismatch)}): {_preview(shape_mismatch)}\n"
            "Check that the file matches the network flags/config (e.g. image_size, num_channels, learn_sigma)."
        )
    model.load_state_dict(state_dict, strict=True)
    return model


def _preview(items: list[str], n: int = 6) -> str:
    if not items:
        return "none"
    shown = ", ".join(items[:n])
    return shown + (f", ... (+{len(items) - n} more)" if len(items) > n else "")
