"""Exported UNets: write, read, locate, identify and load the DDPM UNet DR2 runs.

An export is `unet_ema.pt` (plain state dict) + `unet_ema.json` = `{"net": {...flags}, "diffusion": {...}}`, so
`restore`/`eval` of a cosine-schedule or x0-predicting network run the process it was trained with, without flags
on the command line. Flat flag files (the flags alone, written before exports carried the diffusion) stay
readable: they mean the published process (`PUBLISHED_DIFFUSION`: linear/1000/eps, learn_sigma from their flags).
Released files without a sidecar (DR2_FFHQ.pkl) mean the DR2 FFHQ-256 flags and the published process.

A recorded process wins over a config's `diffusion.*` fields that were not given; a GIVEN field that the record
contradicts is an error naming both (`resolve_diffusion`): the network was trained with the recorded process, and
sampling another one silently gives wrong results.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from lightning_dr2.diffusion import PUBLISHED_DIFFUSION, DiffusionConfig, DiffusionRequest
from lightning_dr2.exports.locate import RANDOM, locate_weights, weights_identity
from lightning_dr2.exports.sidecar import read_sidecar, sidecar_path, write_export
from lightning_dr2.nets.loading import WeightsError, load_into, read_state_dict
from lightning_dr2.nets.unet import DR2_FFHQ256_FLAGS, UNet, normalise_flags

log = logging.getLogger(__name__)

DEFAULT_UNET_FILE = "DR2_FFHQ.pkl"
SIDECAR_FORMAT = '{"net": {...flags}, "diffusion": {...}}'


@dataclass(frozen=True)
class LoadedUNet:
    """What `load_unet` loaded: the network (eval mode), its file (None for random weights), the file's sha256
    ("random"), the sidecar as read (None without one), and the process it runs (learn_sigma resolved)."""

    module: UNet
    path: Path | None
    sha256: str
    record: Any
    diffusion: DiffusionConfig


def net_learns_sigma(flags: Mapping[str, Any]) -> bool:
    """The UNet flag that fixes its output channels (guided-diffusion's default: false)."""
    return bool(normalise_flags(flags)["learn_sigma"])


def published_process(flags: Mapping[str, Any]) -> DiffusionConfig:
    """`PUBLISHED_DIFFUSION` for a network with these flags: what weights without a recorded process mean."""
    return replace(PUBLISHED_DIFFUSION, learn_sigma=None).for_network(net_learns_sigma(flags))


def write_unet(net: UNet, flags: Mapping[str, Any], diffusion: DiffusionConfig, out: str | Path) -> Path:
    """Write a plain state dict (loads into `UNet.from_flags(flags)` with strict=True) and its sidecar: the flags
    and the process it was trained with (learn_sigma resolved against the flags)."""
    process = diffusion.for_network(net_learns_sigma(flags))
    return write_export(net, out, {"net": dict(flags), "diffusion": process.to_dict()})


def parse_unet_sidecar(record: Any, path: Path) -> tuple[dict[str, Any], DiffusionConfig]:
    """(flags, diffusion with learn_sigma resolved) from a UNet sidecar's JSON (`path` names it in errors)."""
    if not isinstance(record, dict):
        raise WeightsError(f"{path}: expected a JSON object (network flags), got {type(record).__name__}")
    if "net" not in record:  # a flat flag file: the process of the published checkpoints
        return record, published_process(record)
    if set(record) != {"net", "diffusion"} or not isinstance(record["net"], dict):
        raise WeightsError(f"{path}: expected {SIDECAR_FORMAT}, got keys {sorted(record)}")
    flags = record["net"]
    try:
        recorded = DiffusionConfig.from_dict(record["diffusion"], source=f"{path} diffusion")
    except ValueError as err:
        raise WeightsError(str(err)) from err
    try:
        return flags, recorded.for_network(net_learns_sigma(flags), source=f"{path} net.learn_sigma")
    except ValueError as err:
        raise WeightsError(f"{path}: {err}") from err


def recorded_unet_flags(weights: str | Path) -> dict[str, Any] | None:
    """The UNet flags an exported file's sidecar records, without loading the weights; None without a sidecar."""
    record = read_sidecar(weights, "UNet sidecar")
    return None if record is None else parse_unet_sidecar(record, sidecar_path(weights))[0]


def resolve_diffusion(
    recorded: DiffusionConfig, requested: DiffusionRequest | None, source: str | Path
) -> DiffusionConfig:
    """The recorded process, checked against the fields a request GAVE (e.g. the config's `diffusion.*`).

    A field not given follows the record; a given one the record contradicts is an error. (`loss` is not
    compared: it plays no part in sampling.)
    """
    given = {} if requested is None else requested.given()
    clashes = [
        f"diffusion.{name}={value!r} (recorded: {getattr(recorded, name)!r})"
        for name, value in given.items()
        if name != "loss" and value != getattr(recorded, name)
    ]
    if clashes:
        raise ValueError(
            f"the config sets {', '.join(clashes)}, but {source} records the process the network was "
            "trained with. Drop those diffusion.* settings to use the recorded process, or correct the "
            f"sidecar (format: {SIDECAR_FORMAT}) if it is wrong."
        )
    log.info("diffusion from %s: %s", source, recorded.to_dict())
    return recorded


def locate_unet(weights: str | Path | None, weights_dir: str | None = None) -> Path:
    """A UNet setting (a file, a registry name, or None: DR2_FFHQ.pkl) -> its file."""
    return locate_weights(None if weights is None else str(weights), DEFAULT_UNET_FILE, weights_dir)


def unet_identity(weights: str | Path | None, weights_dir: str | None = None) -> str:
    """The sha256 a UNet setting names, without loading it ("random" for random weights); `load_unet` records
    the same value."""
    return RANDOM if weights == RANDOM else weights_identity(locate_unet(weights, weights_dir))


def _request(diffusion: DiffusionRequest | DiffusionConfig | None) -> DiffusionRequest | None:
    """A whole `DiffusionConfig` (the Python API) gives every field; a request gives what it sets."""
    return DiffusionRequest.of(diffusion) if isinstance(diffusion, DiffusionConfig) else diffusion


def load_unet(
    weights: str | Path | None = None,
    flags: Mapping[str, Any] | None = None,
    weights_dir: str | None = None,
    diffusion: DiffusionRequest | DiffusionConfig | None = None,
) -> LoadedUNet:
    """The DR2 UNet and the process it runs: `weights` = a file, a registry name, None (DR2_FFHQ.pkl), or "random".

    A sidecar next to the weights wins: its flags over `flags`, its process over the fields `diffusion` does not
    give (one it gives and the sidecar contradicts is an error). Without one: `flags` (default: the DR2 FFHQ-256
    flags) and the given fields over the published process. learn_sigma always follows the network's flags.
    The sidecar is read once.
    """
    request = _request(diffusion)
    if weights == RANDOM:
        net = UNet.from_flags(dict(flags or DR2_FFHQ256_FLAGS)).eval()
        return LoadedUNet(net, None, RANDOM, None, _unrecorded_process(net.flags, request))
    path = locate_unet(weights, weights_dir)
    record = read_sidecar(path, "UNet sidecar")
    if record is None:
        net = UNet.from_flags(dict(flags or DR2_FFHQ256_FLAGS))
        process = _unrecorded_process(net.flags, request)
    else:
        recorded_flags, recorded = parse_unet_sidecar(record, sidecar_path(path))
        net = UNet.from_flags(recorded_flags)
        process = resolve_diffusion(recorded, request, sidecar_path(path))
    load_into(net, read_state_dict(path), path)
    return LoadedUNet(net.eval(), path, weights_identity(path), record, process)


def _unrecorded_process(flags: Mapping[str, Any], request: DiffusionRequest | None) -> DiffusionConfig:
    """The process of weights that record none: the given fields over the published one."""
    base = replace(PUBLISHED_DIFFUSION, learn_sigma=None)
    return (base if request is None else request.over(base)).for_network(net_learns_sigma(flags))
