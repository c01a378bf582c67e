"""The `<weights>.json` sidecar of an exported UNet: its network flags and the diffusion it was trained with.

Exports write `{"net": {...flags}, "diffusion": {...DiffusionConfig}}`, so `restore`/`eval` of a
cosine-schedule or x0-predicting network run the process it was trained with, without flags on the
command line. Flat flag files (the flags alone, written before exports carried the diffusion) stay
readable: they mean the published process (`PUBLISHED_DIFFUSION`: linear/1000/eps, learn_sigma from
their flags). A recorded process wins over a config's `diffusion.*`, except that a value the config
sets away from its default and the record contradicts is an error (`resolve_diffusion`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from lightning_dr2.diffusion import PUBLISHED_DIFFUSION, DiffusionConfig
from lightning_dr2.files import write_json
from lightning_dr2.nets.loading import WeightsError
from lightning_dr2.nets.unet import normalise_flags

log = logging.getLogger(__name__)


def sidecar_path(weights: str | Path) -> Path:
    """`unet_ema.pt` -> `unet_ema.json`."""
    return Path(weights).with_suffix(".json")


def net_learns_sigma(flags: Mapping[str, Any]) -> bool:
    """The UNet flag that fixes its output channels (guided-diffusion's default: false)."""
    return bool(normalise_flags(flags)["learn_sigma"])


def published_process(flags: Mapping[str, Any]) -> DiffusionConfig:
    """`PUBLISHED_DIFFUSION` for a network with these flags: what weights without a recorded process mean."""
    return replace(PUBLISHED_DIFFUSION, learn_sigma=None).for_network(net_learns_sigma(flags))


def write_sidecar(weights: str | Path, flags: Mapping[str, Any], diffusion: DiffusionConfig) -> Path:
    """Write the flags and the process (learn_sigma resolved against the flags) next to `weights`."""
    process = diffusion.for_network(net_learns_sigma(flags))
    return write_json(sidecar_path(weights), {"net": dict(flags), "diffusion": process.to_dict()})


def read_sidecar(weights: str | Path) -> tuple[dict[str, Any], DiffusionConfig] | None:
    """(flags, diffusion with learn_sigma resolved) from `weights`' sidecar; None when it has none."""
    path = sidecar_path(weights)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise WeightsError(f"could not read the UNet sidecar {path}: {err}") from err
    if not isinstance(record, dict):
        raise WeightsError(f"{path}: expected a JSON object (network flags), got {type(record).__name__}")
    if "net" in record:
        if set(record) != {"net", "diffusion"} or not isinstance(record["net"], dict):
            raise WeightsError(
                f'{path}: expected {{"net": {{...flags}}, "diffusion": {{...}}}}, got keys {sorted(record)}'
            )
        flags = record["net"]
        try:
            recorded = DiffusionConfig.from_dict(record["diffusion"], source=f"{path} diffusion")
        except ValueError as err:
            raise WeightsError(str(err)) from err
    else:  # a flat flag file: the process of the published checkpoints
        return record, published_process(record)
    try:
        return flags, recorded.for_network(net_learns_sigma(flags), source=f"{path} net.learn_sigma")
    except ValueError as err:
        raise WeightsError(f"{path}: {err}") from err


def resolve_diffusion(
    recorded: DiffusionConfig, requested: DiffusionConfig | None, source: str | Path
) -> DiffusionConfig:
    """The recorded process, checked against a requested one (e.g. the config's `diffusion.*`).

    Fields the request leaves at their defaults follow the record. A field it sets away from its
    default to a value the record contradicts is an error: the network was trained with the recorded
    process, and sampling another one silently gives wrong results. (`loss` is not compared: it
    plays no part in sampling.)
    """
    if requested is not None:
        default = DiffusionConfig()
        clashes = [
            f"diffusion.{f.name}={getattr(requested, f.name)!r} (recorded: {getattr(recorded, f.name)!r})"
            for f in fields(DiffusionConfig)
            if f.name != "loss"
            and getattr(requested, f.name) != getattr(default, f.name)
            and getattr(requested, f.name) != getattr(recorded, f.name)
        ]
        if clashes:
            raise ValueError(
                f"the config sets {', '.join(clashes)}, but {source} records the process the network was "
                "trained with. Drop those diffusion.* settings to use the recorded process, or correct the "
                'sidecar (format: {"net": {...flags}, "diffusion": {...}}) if it is wrong.'
            )
    log.info("diffusion from %s: %s", source, recorded.to_dict())
    return recorded
