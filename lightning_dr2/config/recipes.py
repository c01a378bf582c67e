"""Recipes: `experiments/<name>.yaml` loaded into the schema its name picks, overrides applied, values checked."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from lightning_dr2.config.ddpm import DDPMConfig
from lightning_dr2.config.enhancer import EnhanceExperimentConfig
from lightning_dr2.config.loader import ConfigError, experiment_path, load_structured, read_yaml, validate
from lightning_dr2.config.pipeline import CacheConfig, EvalConfig, RestoreConfig
from lightning_dr2.config.sets import SettingConfig
from lightning_dr2.diffusion import DiffusionConfig

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


def load_config(
    experiment: str | Path | None, overrides: Sequence[str] = (), schema: type | None = None
) -> DictConfig:
    """Schema defaults <- experiments/<name>.yaml <- `key=value` overrides, validated at each step.

    `schema` defaults to the one the recipe's name picks (`schema_for`); `experiment=None` starts from the
    schema's defaults alone (DDPM training when no schema is given).
    """
    if experiment is None:
        cfg, source = load_structured(schema or DDPMConfig, overrides=overrides), "the command-line overrides"
    else:
        path = experiment_path(experiment)
        schema = schema or schema_for(path)
        cfg, source = load_structured(schema, path, overrides), f"{path} and the command-line overrides"
        if "experiment" not in read_yaml(path):
            cfg.experiment = path.stem
    if "sweep" in cfg:
        _expand_sweep(cfg, source)
    validate(_check_diffusion(cfg, source), source)
    return cfg


def _expand_sweep(cfg: DictConfig, source: str) -> None:
    """`sweep.N` x `sweep.tau` become the `settings` (one place: the saved config shows what ran)."""
    if bool(cfg.sweep.N) != bool(cfg.sweep.tau):
        raise ConfigError(f"invalid config from {source}: sweep.N and sweep.tau must both be given (or neither)")
    if cfg.sweep.N:
        cfg.settings = [SettingConfig(N=n, tau=tau) for n in cfg.sweep.N for tau in cfg.sweep.tau]


def _check_diffusion(cfg: DictConfig, source: str) -> DictConfig:
    """The `diffusion` section must describe a process (checked once merged: keys may change together)."""
    if "diffusion" in cfg:
        try:
            DiffusionConfig.from_dict(OmegaConf.to_container(cfg.diffusion, resolve=True))  # type: ignore[arg-type]
        except ValueError as err:
            raise ConfigError(f"invalid config from {source}: {err}") from err
    return cfg
