"""Test-set specs: the YAML schema of `experiments/testsets/*.yaml` and the `TestSetSpec` it expands to.

A spec file is read like every config of the framework: an OmegaConf structured schema
(`TestSetSpecFile`) merged with the YAML through `config.load_structured`, so an unknown key or a wrong
type fails at load time naming the key and the file. The grid form (`defaults` <- `severities.<s>` <-
scale r from `scales`, splits named `x<r>_<s>`, scale-major) and explicit `splits:` are then expanded
into an ordered `TestSetSpec` of `DegradationSpec`s.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf

from lightning_dr2.config.loader import ConfigError, load_structured, named_yaml
from lightning_dr2.datasets.degradations import DegradationSpec
from lightning_dr2.datasets.testsets import HQ_DIR

BUILDER_VERSION = 1
"""Bumped whenever the build recipe (seeding, resizing, encoding) changes; part of the spec hash."""

TESTSETS_DIR = Path(__file__).resolve().parents[2] / "experiments" / "testsets"
"""Where named specs live: `load_spec("celeba_test")` reads `experiments/testsets/celeba_test.yaml`."""

_SPLIT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


# ------------------------------------------------------------------------------------------ schema


@dataclass
class DegradationFields:
    """Some `DegradationSpec` fields; a field left out (MISSING) is inherited (defaults <- severity <- split).

    Ranges accept a (low, high) list or one number, and `jpeg_range: null` disables JPEG, so those are
    typed `Any` here and checked by `DegradationSpec`, whose errors are reported with the section and file.
    """

    kernel_size: int | None = MISSING
    kernel_prob: Any = MISSING
    sigma_range: Any = MISSING
    rotation_range: Any = MISSING
    scale_range: Any = MISSING
    noise_range: Any = MISSING
    gray_noise_prob: float | None = MISSING
    jpeg_range: Any = MISSING
    interpolations: Any = MISSING
    resize_back: bool | None = MISSING
    up_interpolation: str | None = MISSING


@dataclass
class TestSetSpecFile:
    """The keys a spec YAML may hold (see experiments/testsets/celeba_test.yaml for the grid form)."""

    __test__ = False  # not a pytest test class, despite the name

    name: str = MISSING
    hq_size: int = MISSING
    seed: int = MISSING
    source: str | None = ""
    description: str | None = ""
    defaults: DegradationFields = field(default_factory=DegradationFields)
    scales: list[float] | None = None
    severities: dict[str, DegradationFields] | None = None
    splits: dict[str, DegradationFields] | None = None


# -------------------------------------------------------------------------------------------- spec


@dataclass
class TestSetSpec:
    """A named grid of degradation splits applied to HQ faces resized to `hq_size`.

    `splits` is ordered: a split's position is part of its per-image seeds. `source`/`description` are
    notes for people; they, `name` and `origin` (the file it came from) do not enter `spec_hash`, which
    covers exactly what determines the output bytes.
    """

    __test__ = False  # not a pytest test class, despite the name

    name: str
    hq_size: int
    seed: int
    splits: dict[str, DegradationSpec]
    source: str = ""
    description: str = ""
    origin: str | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        where = self.origin or "TestSetSpec"
        if not isinstance(self.name, str) or not self.name.strip():
            raise ConfigError(f"{where}: name must be a non-empty string, got {self.name!r}")
        self.hq_size = _int(where, "hq_size", self.hq_size, low=1)
        self.seed = _int(where, "seed", self.seed, low=0)
        if not isinstance(self.source, str) or not isinstance(self.description, str):
            raise ConfigError(f"{where}: source and description must be strings")
        if not isinstance(self.splits, Mapping) or not self.splits:
            raise ConfigError(f"{where}: splits must be a non-empty mapping of split name -> DegradationSpec")
        for name, split in self.splits.items():
            if not isinstance(name, str) or not _SPLIT_NAME.match(name) or name == HQ_DIR:
                raise ConfigError(
                    f"{where}: split name {name!r} must be a folder name of letters, digits, '_', '.', '-' "
                    f"(not '{HQ_DIR}')"
                )
            if not isinstance(split, DegradationSpec):
                raise ConfigError(f"{where}: split {name} must be a DegradationSpec, got {type(split).__name__}")
        self.splits = dict(self.splits)

    def to_dict(self) -> dict[str, Any]:
        """The full spec in the explicit `splits:` form; `TestSetSpec.from_dict` reads it back."""
        return {
            "name": self.name,
            "hq_size": self.hq_size,
            "seed": self.seed,
            "source": self.source,
            "description": self.description,
            "splits": {name: split.to_dict() for name, split in self.splits.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], origin: str | None = None) -> TestSetSpec:
        """Parse a spec mapping (grid form `defaults`/`scales`/`severities`, and/or explicit `splits`)."""
        where = origin or "test-set spec"
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where}: a test-set spec must be a mapping, got {type(data).__name__}")
        return _expand(load_structured(TestSetSpecFile, data, origin=where), where)

    def canonical(self) -> dict[str, Any]:
        """What the output bytes depend on, in a JSON-stable form (splits as an ordered list)."""
        return {
            "builder": BUILDER_VERSION,
            "hq_size": self.hq_size,
            "seed": self.seed,
            "splits": [[name, split.to_dict()] for name, split in self.splits.items()],
        }

    def spec_hash(self) -> str:
        """sha256 of the canonical JSON: equal hashes mean the same images come out of the same HQ folder."""
        text = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return hashlib.sha256(text.encode("ascii")).hexdigest()


def spec_path(name_or_path: str | os.PathLike) -> Path:
    """Resolve `celeba_test`, `experiments/testsets/celeba_test.yaml` or any YAML path to an existing file."""
    return named_yaml(name_or_path, TESTSETS_DIR, "test-set spec")


def load_spec(path: str | os.PathLike) -> TestSetSpec:
    """Load and validate a spec YAML (or a name in `experiments/testsets/`); errors name the key and file."""
    path = spec_path(path)
    return _expand(load_structured(TestSetSpecFile, path), str(path))


# ------------------------------------------------------------------------------------------ expand


def _int(where: str, key: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ConfigError(f"{where}: {key} must be an integer >= {low}, got {value!r}")
    return int(value)


def _given(node: DictConfig | None) -> dict[str, Any]:
    """The fields a section sets (MISSING ones are inherited), as plain Python values."""
    if node is None:
        return {}
    return {
        key: OmegaConf.to_container(node[key]) if OmegaConf.is_config(node[key]) else node[key]
        for key in node
        if not OmegaConf.is_missing(node, key)
    }


def _degradation_spec(values: Mapping[str, Any], section: str, where: str) -> DegradationSpec:
    try:
        return DegradationSpec.from_dict(values)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where}: {section}: {err}") from None


def _scale_name(scale: float, where: str) -> tuple[str, float]:
    if not math.isfinite(scale) or scale <= 0:
        raise ConfigError(f"{where}: scales must be positive numbers, got {scale!r}")
    value = float(scale)
    return (f"x{int(value)}" if value.is_integer() else f"x{value:g}"), value


def _expand(cfg: DictConfig, where: str) -> TestSetSpec:
    """The grid (`defaults` <- `severities.<s>` <- scale) and explicit `splits` as ordered DegradationSpecs."""
    missing = [key for key in ("name", "hq_size", "seed") if OmegaConf.is_missing(cfg, key)]
    if missing:
        raise ConfigError(f"{where}: missing key {missing[0]!r}")
    defaults = _given(cfg.defaults)
    if (cfg.scales is None) != (cfg.severities is None):
        raise ConfigError(f"{where}: scales and severities go together (the grid is scales x severities)")
    splits: dict[str, dict[str, Any]] = {}
    if cfg.scales is not None:
        if not cfg.scales or not cfg.severities:
            raise ConfigError(f"{where}: scales and severities must not be empty")
        for scale in cfg.scales:
            prefix, value = _scale_name(scale, where)
            for severity, node in cfg.severities.items():
                values = _given(node)
                if "scale_range" in values:
                    raise ConfigError(f"{where}: severities.{severity} sets scale_range; the scale comes from `scales`")
                name = f"{prefix}_{severity}"
                if name in splits:
                    raise ConfigError(f"{where}: split {name} appears twice (repeated scale {scale!r}?)")
                splits[name] = {**defaults, **values, "scale_range": [value, value]}
    for name, node in (cfg.splits or {}).items():
        # A grid split named again is overridden field by field; a new name starts from `defaults`.
        splits[str(name)] = {**splits.get(str(name), defaults), **_given(node)}
    if not splits:
        raise ConfigError(f"{where}: no splits; give `scales` + `severities` and/or `splits`")
    built = {name: _degradation_spec(values, f"split {name}", where) for name, values in splits.items()}
    return TestSetSpec(
        name=cfg.name,
        hq_size=cfg.hq_size,
        seed=cfg.seed,
        splits=built,
        source=cfg.source or "",
        description=cfg.description or "",
        origin=where,
    )
