"""The config loader: typed schema <- YAML <- `key=value` overrides, with errors that name the key and its source.

A run's config is `OmegaConf.structured(schema)` merged with a YAML file, then with command-line `key=value`
pairs (the form W&B sweeps emit). Struct mode makes unknown keys and wrong types fail at load time;
`load_structured` re-raises them as `ConfigError` with the key and the file or argument they came from.
Value checks live beside each schema (its `check` method, run by `validate`). No domain imports here:
datasets, benchmarks and the published numbers load their own YAML files with this module.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lightning_dr2.outputs import check_output_location, claim_output, is_first_process, unique_run_name

PROJECT_ROOT = Path(__file__).resolve().parents[2]
EXPERIMENTS_DIR = PROJECT_ROOT / "experiments"


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message names the key and where it came from."""


def named_yaml(name_or_path: str | Path, folder: Path, what: str) -> Path:
    """A YAML by name in `folder` (`ddpm_tiny` -> folder/ddpm_tiny.yaml) or by path; the error lists the names."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") and candidate.is_file():
        return candidate
    named = folder / f"{name_or_path}.yaml"
    if named.is_file():
        return named
    known = sorted(p.stem for p in folder.glob("*.yaml"))
    raise ConfigError(f"{what} '{name_or_path}' not found: no file {candidate} or {named}. Known: {known}")


def experiment_path(name_or_path: str | Path) -> Path:
    """Resolve `ddpm_tiny`, `experiments/ddpm_tiny.yaml` or any YAML path to an existing file."""
    return named_yaml(name_or_path, EXPERIMENTS_DIR, "experiment")


def read_yaml(path: str | Path) -> DictConfig:
    """A YAML file as an OmegaConf node; syntax errors and repeated keys name the file."""
    try:
        node = OmegaConf.load(path)
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: invalid YAML: {err}") from None
    if not isinstance(node, DictConfig):
        raise ConfigError(f"{path}: expected a mapping of keys to values, got a {type(node).__name__}")
    return node


def load_structured(
    schema: type | Any,
    source: str | Path | Mapping[str, Any] | None = None,
    overrides: Sequence[str] = (),
    origin: str | None = None,
) -> DictConfig:
    """Any structured schema (a dataclass, or an instance giving other defaults) <- `source` <- overrides.

    `source` is a YAML file or a mapping (named `origin` in errors). Unknown keys and wrong types raise
    `ConfigError` naming the key and where it came from, the same for every config of the framework.
    """
    cfg = OmegaConf.structured(schema)
    if isinstance(source, Mapping):
        cfg = _merge(cfg, source, origin or "a mapping")
    elif source is not None:
        cfg = _merge(cfg, read_yaml(source), origin or str(source))
    return _apply_overrides(cfg, overrides)


def _apply_overrides(cfg: DictConfig, overrides: Sequence[str]) -> DictConfig:
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form key=value (e.g. trainer.max_steps=100)")
        try:
            parsed = OmegaConf.from_dotlist([item])
        except (yaml.YAMLError, OmegaConfBaseException) as err:
            raise ConfigError(
                f"command-line override '{item}' is not valid YAML after the '=' ({str(err).splitlines()[0]}); "
                "write lists as key=[a,b] and quote the whole override in the shell"
            ) from None
        cfg = _merge(cfg, parsed, f"command-line override '{item}'")
    return cfg


def _merge(cfg: DictConfig, other: DictConfig | Mapping[str, Any], source: str) -> DictConfig:
    try:
        return OmegaConf.merge(cfg, other)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "?"
        message = str(err.msg if hasattr(err, "msg") else err).splitlines()[0]
        raise ConfigError(f"invalid config from {source}: key '{key}': {_expected_shape(cfg, key) or message}") from err


def _expected_shape(cfg: DictConfig, key: str) -> str | None:
    """'takes a list ...' when a scalar was given for a list key (OmegaConf's own words name its node classes)."""
    try:
        node = OmegaConf.select(cfg, key, throw_on_missing=False)
    except OmegaConfBaseException:
        return None
    if isinstance(node, ListConfig):
        return f"takes a list, e.g. {key}=[4] or {key}=[4,8] (quote the whole override in the shell)"
    if isinstance(node, DictConfig):
        return f"takes a mapping, e.g. '{key}={{name: value}}' (quote the whole override in the shell)"
    return None


# -- value checks ----------------------------------------------------------------------------------------
# Types are checked by the schema; these are the ranges a value must lie in to mean something. Each schema
# has a `check(c: Checks)` static method beside its fields, run by `validate`; each error names the key, the
# value, and what to do.


class Checks:
    """`require(key, ok, need)`: raise a ConfigError naming key, value, the requirement and the config's source."""

    def __init__(self, cfg: DictConfig, source: str) -> None:
        self.cfg, self.source = cfg, source

    def value(self, key: str) -> Any:
        node = OmegaConf.select(self.cfg, key)
        return OmegaConf.to_container(node) if isinstance(node, (DictConfig, ListConfig)) else node

    def fail(self, key: str, value: Any, need: str) -> None:
        raise ConfigError(f"{key}={value!r} {need} (from {self.source})")

    def require(self, key: str, ok: Callable[[Any], bool], need: str) -> None:
        value = self.value(key)
        if not ok(value):
            self.fail(key, value, need)

    def at_least(self, key: str, low: int, what: str = "") -> None:
        self.require(key, lambda v: v >= low, f"must be >= {low}{what}")

    def one_of(self, key: str, allowed: Sequence[Any], why: str = "") -> None:
        self.require(key, lambda v: v in allowed, f"must be one of {list(allowed)}{why}")

    def unit_interval(self, key: str, example: str = "") -> None:
        self.require(key, in_unit_interval, f"must be in [0, 1){example}")

    def accelerator(self, key: str) -> None:
        self.require(
            key,
            lambda v: str(v).lower() not in ("gpu", "cuda") or _cuda_visible(),
            f"asks for a CUDA GPU but none is visible on this machine (torch.cuda.is_available() is False); "
            f"use {key}=cpu or {key}=auto",
        )


def _cuda_visible() -> bool:
    import torch

    return torch.cuda.is_available()


def in_unit_interval(value: Any) -> bool:
    return 0.0 <= value < 1.0


def validate(cfg: DictConfig, source: str) -> None:
    """Run the value checks of `cfg`'s schema (its `check` static method; schemas without one pass)."""
    check = getattr(OmegaConf.get_type(cfg), "check", None)
    if check is not None:
        check(Checks(cfg, source))


def resolve_run_name(cfg: DictConfig) -> str:
    """The run id, chosen once: explicit > $DR2_RUN > $SLURM_JOB_ID > timestamp.

    It is exported as $DR2_RUN so processes Lightning launches for DDP (which re-run the command)
    agree on it, and a SLURM requeue (same job id) lands in the same run directory and W&B run. A timestamp
    is made unique by the first process (`outputs.unique_run_name`): two runs started in the same second
    never share a directory.
    """
    run = cfg.run or os.environ.get("DR2_RUN") or os.environ.get("SLURM_JOB_ID")
    if not run:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        run = unique_run_name(Path(cfg.runs_dir) / cfg.experiment, stamp) if is_first_process() else stamp
    os.environ["DR2_RUN"] = str(run)
    return str(run)


def run_dir(cfg: DictConfig) -> Path:
    return Path(cfg.runs_dir) / cfg.experiment / str(cfg.run)


def open_run_dir(cfg: DictConfig) -> Path:
    """Check `runs_dir`, name the run, create its directory and claim it (one job per run directory at a time).

    Every job with a run directory (train, train-enhancer, eval) starts here, so none can forget the checks."""
    check_output_location(cfg.runs_dir, "runs_dir")
    cfg.run = resolve_run_name(cfg)
    path = check_output_location(run_dir(cfg), "run directory")
    claim_output(path, "run")
    return path


def save_config(cfg: DictConfig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, path, resolve=True)


def flat_dict(cfg: DictConfig) -> dict[str, Any]:
    """`{"net.num_channels": 128, ...}`: the form W&B shows and sweeps write back as overrides."""
    out: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
        else:
            out[prefix[:-1]] = node

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return out
