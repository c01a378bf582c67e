"""Recipes: `experiments/<name>.yaml` loaded into the schema its name picks, overrides applied, values checked."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from lightning_dr2.config.ddpm import DDPMConfig
from lightning_dr2.config.enhancer import EnhanceExperimentConfig
from lightning_dr2.config.loader import (
    ConfigError,
    experiment_path,
    flat_dict,
    load_structured,
    read_yaml,
    validate,
)
from lightning_dr2.config.pipeline import CacheConfig, EvalConfig, RestoreConfig
from lightning_dr2.config.sets import SettingConfig
from lightning_dr2.diffusion import DiffusionConfig, DiffusionRequest

# Recipe name prefix -> schema (the first match wins; anything else trains a DDPM).
SCHEMA_BY_PREFIX: tuple[tuple[str, type], ...] = (
    ("enhance", EnhanceExperimentConfig),
    ("restore", RestoreConfig),
    ("eval", EvalConfig),
    ("dr2_cache", CacheConfig),
)


def schema_for(experiment: str | Path) -> type:
    """Which schema a recipe in experiments/ follows, by its name: enhance_*, restore_*, eval_*, dr2_cache*, else
    DDPM training."""
    stem = Path(str(experiment)).stem
    return next((schema for prefix, schema in SCHEMA_BY_PREFIX if stem.startswith(prefix)), DDPMConfig)


def load_config(experiment: str | Path | None, overrides: Sequence[str] = (), schema: type | None = None) -> DictConfig:
    """Schema defaults <- experiments/<name>.yaml <- `key=value` overrides, validated at each step.

    `schema` defaults to the one the recipe's name picks (`schema_for`); `experiment=None` starts from the
    schema's defaults alone (DDPM training when no schema is given).
    """
    given: dict[str, set[str]] = {}
    if experiment is None:
        schema = schema or DDPMConfig
        cfg, source = load_structured(schema, overrides=overrides), "the command-line overrides"
    else:
        path = experiment_path(experiment)
        schema = schema or schema_for(path)
        cfg, source = load_structured(schema, path, overrides), f"{path} and the command-line overrides"
        given[str(path)] = set(flat_dict(read_yaml(path)))
    given["the command-line overrides"] = _given_keys(overrides)  # parsed: load_structured accepted them
    if experiment is not None and not any("experiment" in keys for keys in given.values()):
        cfg.experiment = path.stem  # the recipe's name, unless the recipe or an override names the experiment
    _refuse_ignored(getattr(schema, "IGNORED_KEYS", {}), given)
    if "sweep" in cfg:
        _expand_sweep(cfg, source, overrides)
    validate(_check_diffusion(cfg, source), source)
    return cfg


def _expand_sweep(cfg: DictConfig, source: str, overrides: Sequence[str]) -> None:
    """`sweep.N` x `sweep.tau` become the `settings` (one place: the saved config shows what ran)."""
    if bool(cfg.sweep.N) != bool(cfg.sweep.tau):
        raise ConfigError(f"invalid config from {source}: sweep.N and sweep.tau must both be given (or neither)")
    if not cfg.sweep.N:
        return
    for key in ("sweep.N", "sweep.tau"):
        values = list(OmegaConf.select(cfg, key))
        repeats = sorted({v for v in values if values.count(v) > 1})
        if repeats:
            raise ConfigError(f"{key}={values} repeats {repeats}: list each value once (from {source})")
    if any(_key_of(item) == "settings" for item in overrides):
        raise ConfigError(
            "settings=... and sweep.N/sweep.tau both given: the sweep's N x tau grid replaces the settings list. "
            "Give one of them"
        )
    cfg.settings = [SettingConfig(N=n, tau=tau) for n in cfg.sweep.N for tau in cfg.sweep.tau]


def _key_of(override: str) -> str:
    return override.split("=", 1)[0].strip()


def _given_keys(overrides: Sequence[str]) -> set[str]:
    """The dotted keys the overrides set (`dr2={N: 4}` sets dr2.N); already parsed once by `load_structured`."""
    return set(flat_dict(OmegaConf.from_dotlist(list(overrides)))) if overrides else set()


def _refuse_ignored(ignored: dict[str, str], given: dict[str, set[str]]) -> None:
    """Every setting takes effect or is an error: a key the job does not read (or a flag gives) is refused."""
    for source, keys in given.items():
        for key in sorted(keys & set(ignored)):
            raise ConfigError(f"{key} {ignored[key]} (set in {source}); remove it there")


def _check_diffusion(cfg: DictConfig, source: str) -> DictConfig:
    """Each diffusion section must describe a process (checked once merged: keys may change together): a DDPM's
    whole `DiffusionConfig`, or the fields a `DiffusionRequest` gives over the published process."""
    for key in ("diffusion", "dr2.diffusion"):
        section = OmegaConf.select(cfg, key)
        if not isinstance(section, DictConfig):
            continue
        schema = DiffusionRequest if OmegaConf.get_type(section) is DiffusionRequest else DiffusionConfig
        try:
            where = None if key == "diffusion" else key  # the messages name `diffusion.<field>`
            schema.from_dict(OmegaConf.to_container(section, resolve=True), source=where)  # type: ignore[arg-type]
        except ValueError as err:
            raise ConfigError(f"invalid config from {source}: {err}") from err
    return cfg
