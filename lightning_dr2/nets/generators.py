"""The enhancer generators, built by name + options: what training trains and exports, what DR2E runs.

An exported enhancer records `{"generator": <name>, "options": {...}}` next to its weights, so the
same registry rebuilds it for inference (see `lightning_dr2.dr2.enhancer_export`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from lightning_dr2.nets.plain_unet import PlainUNet
from lightning_dr2.nets.sparnet import SPARNet

GENERATORS: dict[str, Callable[..., nn.Module]] = {
    "sparnethd": SPARNet.hd,  # the released 512 SPARNetHD; options override single config values
    "sparnet": SPARNet,  # any SPARNet config (e.g. a 64 px CPU one)
    "unet": PlainUNet,  # a plain U-Net baseline without attention
}


def build_generator(name: str, options: Mapping[str, Any] | None = None) -> nn.Module:
    """`GENERATORS[name](**options)`; unknown names and options are errors naming what exists."""
    if name not in GENERATORS:
        raise ValueError(f"unknown generator {name!r}; registered: {sorted(GENERATORS)}")
    try:
        return GENERATORS[name](**dict(options or {}))
    except TypeError as err:
        raise ValueError(f"generator {name!r}: bad options {dict(options or {})}: {err}") from err


def generator_size(net: nn.Module) -> int:
    """The square resolution a generator works at (every registered generator has `.size`)."""
    return int(net.size)  # type: ignore[arg-type]
