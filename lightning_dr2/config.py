"""Experiment configuration: a typed schema, one YAML per recipe, `key=value` overrides.

The schema (dataclasses below) is the single list of every setting and its default. A run's config is
`OmegaConf.structured(schema)` merged with `experiments/<name>.yaml`, then with command-line
`key=value` pairs (the form W&B sweeps emit). Struct mode makes unknown keys and wrong types fail at
load time; `load_config` re-raises them with the key and the file or argument they came from.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lightning_dr2.diffusion import DiffusionConfig
from lightning_dr2.metrics.catalogue import default_metrics
from lightning_dr2.nets.unet import DR2_FFHQ256_FLAGS

PROJECT_ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS_DIR = PROJECT_ROOT / "experiments"


@dataclass
class NetConfig:
    """ADM UNet flags, with guided-diffusion's names and value formats (see `UNet.from_flags`)."""

    image_size: int = 64
    num_channels: int = 64
    num_res_blocks: int = 1
    channel_mult: str = ""
    attention_resolutions: str = "16"
    num_heads: int = 4
    num_head_channels: int = 32
    num_heads_upsample: int = -1
    use_scale_shift_norm: bool = True
    resblock_updown: bool = True
    learn_sigma: bool = True
    dropout: float = 0.0
    use_new_attention_order: bool = False
    class_cond: bool = False
    use_fp16: bool = False
    use_checkpoint: bool = False


@dataclass
class DataConfig:
    root: str = "data/synthetic"
    image_size: int = 64
    batch_size: int = 16  # per device
    num_workers: int = 2
    val_fraction: float = 0.05
    val_max: int = 64
    flip: bool = True
    # true: train on `synthetic_n` generated faces, cached in `root` (made there on first use, reused after;
    # a `root` holding other images is an error). false: `root` must hold images (a missing or empty folder is
    # an error, never silently filled with synthetic faces).
    synthetic: bool = False
    synthetic_n: int = 0


@dataclass
class OptimConfig:
    lr: float = 1e-4
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    warmup_steps: int = 500
    grad_clip: float = 1.0


@dataclass
class EMAConfig:
    decay: float = 0.9999
    # Use min(decay, (1 + n) / (10 + n)) after n updates, so early EMA weights are not stuck at init.
    warmup: bool = True


@dataclass
class SamplingConfig:
    """Fixed-seed sample grids from the EMA weights during and after training."""

    every_n_steps: int = 5000
    num_samples: int = 16
    method: str = "ddim"  # ddim | ddpm
    steps: int = 50
    eta: float = 0.0
    seed: int = 0


@dataclass
class CheckpointConfig:
    every_n_steps: int = 5000
    save_top_k: int = -1  # -1 keeps every periodic checkpoint


@dataclass
class WandbConfig:
    # auto: online when credentials are configured (WANDB_API_KEY or a netrc entry), else offline.
    mode: str = "auto"  # auto | online | offline | disabled
    project: str = "lightning_dr2"
    entity: str | None = None
    group: str | None = None  # defaults to the experiment name
    tags: list[str] = field(default_factory=list)
    init_timeout: float = 30.0  # seconds to wait for an online start before continuing offline


@dataclass
class TrainerConfig:
    max_steps: int = 1000
    accelerator: str = "auto"
    devices: Any = "auto"  # int, list of ids, or "auto"
    num_nodes: int = 1
    strategy: str = "auto"  # ddp is chosen by Lightning for several devices
    precision: str = "auto"  # auto: bf16-mixed on GPU, 32-true on CPU
    accumulate_grad_batches: int = 1
    log_every_n_steps: int = 10
    val_check_interval: int = 1000  # in training steps
    limit_val_batches: float = 1.0
    compile: bool = False
    channels_last: bool = False
    progress_bar: bool = True
    # Steps whose loss or gradients are NaN/Inf are skipped; this many in a row stop training with an error.
    max_bad_steps: int = 20


@dataclass
class EvalSetConfig:
    """One benchmark set: a folder built by `testset` (paired LQ/HQ splits) or a folder of real LQ faces."""

    name: str = "celeba_test"
    root: str = "data/testsets/celeba_test"
    kind: str = "paired"  # paired | real
    splits: list[str] = field(default_factory=list)  # paired sets: empty = every split in the folder
    limit: int = 0  # evaluate the first `limit` images of each split (0 = all)
    # FID reference statistics: a path or a bare file name found through the weights lookup (BasicSR's
    # inception_FFHQ_512-f7b384ab.pth, the papers' reference, or an .npz from `fid-stats`). None: paired
    # sets use their own HQ images, reported as fid_gt (a different number); real sets need a file.
    fid_reference: str | None = None


@dataclass
class SettingConfig:
    N: int = 8
    tau: int = 35
    omega: int | None = None


@dataclass
class SweepConfig:
    """The paper's (N, tau) ablation as one run: `sweep.N=[4,8,16] sweep.tau=[20,35,50]` evaluates every
    pair (omega by the official rule) in place of `settings`, and the report plots each metric against tau,
    one line per N. W&B sweeps can drive the same keys (experiments/sweep_n_tau.yaml)."""

    N: list[int] = field(default_factory=list)
    tau: list[int] = field(default_factory=list)


@dataclass
class EvaluatorConfig:
    """The DR2 evaluator callback during training (`lightning_dr2.callbacks.evaluator`)."""

    enabled: bool = False
    every_n_steps: int = 5000
    sets: list[EvalSetConfig] = field(default_factory=list)
    settings: list[SettingConfig] = field(default_factory=lambda: [SettingConfig()])
    metrics: list[str] = field(default_factory=default_metrics)
    respacing: int = 100
    batch_size: int = 8
    skip_missing_weights: bool = True
    random_metric_networks: bool = False  # smoke tests only
    log_images: int = 8


@dataclass
class ExperimentConfig:
    experiment: str = "ddpm_tiny"
    run: str | None = None  # default: $DR2_RUN, $SLURM_JOB_ID, or a timestamp chosen once
    runs_dir: str = "runs"
    seed: int = 0
    # auto: resume from the run's last.ckpt if it exists (SLURM requeue); true: require it; false; or a path.
    resume: str = "auto"
    net: NetConfig = field(default_factory=NetConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    ema: EMAConfig = field(default_factory=EMAConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    evaluator: EvaluatorConfig = field(default_factory=lambda: EvaluatorConfig())


@dataclass
class EnhancerConfig:
    """The enhancement module after DR2 (`none`, or any name in `nets.restorers.RESTORERS`)."""

    name: str = "sparnethd"
    weights: str | None = None  # default: the registry's file for this enhancer (e.g. SPARNetHD_FFHQ_DR2aug.pth)
    size: int = 512  # the enhancer's input/output resolution; DR2's output is bicubic-upsampled to it
    # Constructor arguments overriding the enhancer's defaults (e.g. a tiny SPARNet for tests).
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class DR2Settings:
    N: int = 8
    tau: int = 35
    omega: int | None = None  # default: the official rule (tau + 5..30 by N), capped at respacing - 1
    respacing: int = 100
    sampler: str = "ddpm"  # ddpm (official) | ddim
    eta: float = 0.0


@dataclass
class PipelineConfig:
    """DR2 (+ enhancer) networks, settings and how to run them; shared by restore and eval.

    `net` and `diffusion` describe the UNet in `unet_weights` when it has no `<weights>.json` sidecar
    (the defaults are the published DR2 FFHQ-256 network and its linear/1000/eps process). An exported
    UNet's sidecar wins over both: it records the flags and the diffusion the network was trained
    with. A `diffusion.*` value set away from its default that contradicts the sidecar is an error
    naming both (see `dr2.sidecar.resolve_diffusion`), never a silently different process.
    """

    unet_weights: str | None = None  # file, registry name, or "random"; default DR2_FFHQ.pkl from the registry
    net: NetConfig = field(default_factory=lambda: NetConfig(**DR2_FFHQ256_FLAGS))  # a <weights>.json sidecar wins
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)  # ditto (see the docstring)
    dr2: DR2Settings = field(default_factory=DR2Settings)
    enhancer: EnhancerConfig = field(default_factory=EnhancerConfig)
    batch_size: int = 8
    seed: int = 0  # image seeds are derived from (seed, relative path): independent of order and GPU count
    dtype: str = "auto"  # auto: bf16 autocast on GPU, fp32 on CPU | fp32 | bf16
    compile: bool = False
    channels_last: bool = True
    accelerator: str = "auto"
    devices: Any = "auto"
    strategy: str = "auto"  # Lightning picks DDP for several devices; ddp_spawn for notebooks/tests
    num_workers: int = 2
    progress_bar: bool = True
    # Non-square inputs: center_crop (keep the face's aspect, lose the long side's margins) | pad (keep all,
    # replicate the border) | stretch (keep all, distort). Recorded per image in the manifest.
    input_policy: str = "center_crop"
    # A finished output is reused only when it was made from the same input, weights and settings.
    # auto: recompute the others; strict: stop and name the settings that changed.
    reuse: str = "auto"


@dataclass
class RestoreConfig(PipelineConfig):
    """`python -m lightning_dr2 restore`: DR2 (+ enhancer) over folders of aligned faces."""

    experiment: str = "restore"
    input: str | None = None
    output: str | None = None
    limit: int = 0  # restore only the first `limit` images (sorted by path); 0 = all
    save_dr2: bool = True  # also write the DR2 intermediate (x0_hat at tau)
    comparison: bool = False  # also write input | DR2 | output side by side


@dataclass
class EvalConfig(PipelineConfig):
    """`python -m lightning_dr2 eval`: DR2 (+ enhancer) over benchmark sets x (N, tau) settings -> metrics."""

    experiment: str = "eval"
    # The label of what is evaluated (W&B config field `method`, one run per method in a shared project,
    # compared in W&B's run table). Default: "DR2+<enhancer.name>" ("DR2" without an enhancer).
    method: str | None = None
    run: str | None = None
    runs_dir: str = "runs"
    sets: list[EvalSetConfig] = field(default_factory=lambda: [EvalSetConfig()])
    settings: list[SettingConfig] = field(default_factory=lambda: [SettingConfig()])  # [] : no DR2 restore
    sweep: SweepConfig = field(default_factory=SweepConfig)
    # Other methods' restored folders, scored like DR2's outputs: `predictions.GFPGAN=/data/gfpgan_out`. Layout:
    # DIR/<split>/<name>.png (.jpg ...) for a paired set, DIR/<name> for a real one, with a DIR/<set>/ level
    # when `sets` lists several sets. Each method is its own row (`method`) and its own W&B run.
    predictions: dict[str, str] = field(default_factory=dict)
    metrics: list[str] = field(default_factory=default_metrics)
    lpips_net: str = "vgg"  # vgg (BasicSR/VQFR scripts) | alex
    skip_missing_weights: bool = False  # true: a metric whose weights are missing is skipped with a note
    reference: bool = False  # also evaluate the LQ inputs themselves (the papers' "Input" row)
    # A split or ground-truth file the set lists but that is missing: an error naming it; true: a warning,
    # counted per split in results.json ("missing") and the report, and the rest is scored.
    allow_missing: bool = False
    report_images: int = 8  # input | DR2 | output | GT rows per split in the report
    report_worst: int = 4  # per metric, the k worst restored images of the run in the report (0: none)
    random_metric_networks: bool = False  # smoke tests only: LPIPS/FID/ArcFace with random weights
    wandb: WandbConfig = field(default_factory=WandbConfig)


def demo_settings() -> list[SettingConfig]:
    """The three (N, tau) of the DR2 demo: our default mix for training pairs (the paper publishes none)."""
    return [SettingConfig(4, 22), SettingConfig(8, 35), SettingConfig(16, 35)]


@dataclass
class CacheConfig(PipelineConfig):
    """`python -m lightning_dr2 dr2-cache`: DR2 outputs of a face folder for enhancer training (no enhancer).

    Each output draws its (N, tau, omega) from `settings` by its own seed; `dr2.N/tau/omega` are not used.
    """

    experiment: str = "dr2_cache"
    hq: str | None = None
    out: str | None = None
    limit: int = 0  # the first `limit` faces (sorted by path); 0 = all
    settings: list[SettingConfig] = field(default_factory=demo_settings)
    samples_per_image: int = 1  # DR2 samples per face with different seeds: dr2/, dr2_s1/, dr2_s2/, ...
    enhancer: EnhancerConfig = field(default_factory=lambda: EnhancerConfig(name="none"))


def schema_for(experiment: str | Path) -> type:
    """Which schema a recipe in experiments/ follows, by its name: restore_*, eval_*, enhance_*, dr2_cache*, else
    DDPM training."""
    stem = Path(str(experiment)).stem
    if stem.startswith("enhance"):
        from lightning_dr2.enhancer_config import EnhanceExperimentConfig

        return EnhanceExperimentConfig
    if stem.startswith("restore"):
        return RestoreConfig
    if stem.startswith("eval"):
        return EvalConfig
    if stem.startswith("dr2_cache"):
        return CacheConfig
    return ExperimentConfig


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


def load_config(
    experiment: str | Path | None, overrides: list[str] | tuple[str, ...] = (), schema: type = ExperimentConfig
) -> DictConfig:
    """Schema defaults <- experiments/<name>.yaml <- `key=value` overrides, validated at each step.

    `experiment=None` starts from the schema's defaults alone.
    """
    if experiment is None:
        cfg, source = load_structured(schema, overrides=overrides), "the command-line overrides"
    else:
        path = experiment_path(experiment)
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


def _check_diffusion(cfg: DictConfig, source: str) -> DictConfig:
    """The `diffusion` section must describe a process (checked once merged: keys may change together)."""
    if "diffusion" in cfg:
        try:
            DiffusionConfig.from_dict(OmegaConf.to_container(cfg.diffusion, resolve=True))  # type: ignore[arg-type]
        except ValueError as err:
            raise ConfigError(f"invalid config from {source}: {err}") from err
    return cfg


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
        raise ConfigError(
            f"invalid config from {source}: key '{key}': {err.msg if hasattr(err, 'msg') else err}"
        ) from err


# -- value checks ----------------------------------------------------------------------------------------
# Types are checked by the schema; these are the ranges a value must lie in to mean something. One function
# per schema, run by `load_config`, each error naming the key, the value, and what to do.


class _Checks:
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

    def accelerator(self, key: str) -> None:
        self.require(
            key,
            lambda v: str(v).lower() not in ("gpu", "cuda") or _cuda_visible(),
            f"asks for a CUDA GPU but none is visible on this machine (torch.cuda.is_available() is False); "
            f"use {key}=cpu or {key}=auto",
        )

    def dr2_settings(self, prefix: str, N: int, tau: int, omega: int | None, respacing: int) -> None:  # noqa: N803
        from lightning_dr2.dr2.remover import SettingError, check_indices

        try:
            check_indices(N, tau, omega, respacing)
        except SettingError as err:
            self.fail(f"{prefix}{err.name}", err.value, err.reason)

    def settings_list(self, key: str, respacing_key: str) -> None:
        """Every (N, tau, omega) of the list at `key` against the respaced grid of `respacing_key`."""
        for i, s in enumerate(self.value(key)):
            self.dr2_settings(f"{key}[{i}].", s["N"], s["tau"], s["omega"], self.value(respacing_key))


def _cuda_visible() -> bool:
    import torch

    return torch.cuda.is_available()


def _in_unit_interval(value: Any) -> bool:
    return 0.0 <= value < 1.0


def validate_training(c: _Checks) -> None:
    """ExperimentConfig (DDPM training)."""
    c.require(
        "optim.betas",
        lambda v: len(v) == 2 and all(_in_unit_interval(b) for b in v),
        "must be two values in [0, 1) (Adam's beta1, beta2), e.g. optim.betas=[0.9,0.999]",
    )
    c.require("optim.lr", lambda v: v > 0, "must be > 0 (e.g. 1e-4)")
    c.require("optim.weight_decay", lambda v: v >= 0, "must be >= 0")
    c.require("optim.grad_clip", lambda v: v >= 0, "must be >= 0 (0 turns clipping off)")
    c.at_least("optim.warmup_steps", 0)
    c.require("ema.decay", _in_unit_interval, "must be in [0, 1) (e.g. 0.9999)")
    c.at_least("trainer.max_steps", 1, ": the number of optimizer steps to train for")
    c.at_least("trainer.accumulate_grad_batches", 1)
    c.at_least("trainer.log_every_n_steps", 1)
    c.at_least("trainer.val_check_interval", 1, " (training steps between validations)")
    c.at_least("trainer.num_nodes", 1)
    c.at_least("trainer.max_bad_steps", 1, " (non-finite steps in a row before training stops)")
    c.require("trainer.limit_val_batches", lambda v: v >= 0, "must be >= 0 (0 turns validation off)")
    c.accelerator("trainer.accelerator")
    c.one_of(
        "checkpoint.save_top_k",
        (-1, 0, 1),
        ": periodic checkpoints have no metric to rank them by, and Lightning keeps the best k > 1 only with a "
        "monitored metric. Use -1 (keep every periodic checkpoint), 0 (only last.ckpt) or 1 (only the newest), "
        "and set checkpoint.every_n_steps for how often one is written",
    )
    c.at_least("checkpoint.every_n_steps", 0, " (0: no periodic checkpoints)")
    c.at_least("data.image_size", 1)
    c.at_least("data.batch_size", 1, " (images per device and step)")
    c.at_least("data.num_workers", 0, " (0 loads data in the main process)")
    c.require("data.val_fraction", _in_unit_interval, "must be in [0, 1)")
    c.at_least("data.val_max", 0)
    c.at_least("data.synthetic_n", 0)
    if c.value("data.synthetic"):
        c.at_least("data.synthetic_n", 1, ": data.synthetic=true trains on that many generated faces (e.g. 512)")
    c.one_of("sampling.method", ("ddim", "ddpm"))
    c.at_least("sampling.steps", 1)
    c.at_least("sampling.every_n_steps", 0, " (0: only at the end)")
    c.require("sampling.eta", lambda v: 0.0 <= v <= 1.0, "must be in [0, 1] (0: deterministic DDIM)")
    validate_evaluator(c)


def validate_evaluator(c: _Checks) -> None:
    """The `evaluator` section of a training config (DDPM or enhancer)."""
    if not c.value("evaluator.enabled"):
        return
    c.require(
        "evaluator.sets",
        lambda v: len(v) > 0,
        "must list the benchmark sets to score when evaluator.enabled=true, e.g. "
        "evaluator.sets=[{name: celeba_test, root: data/testsets/celeba_test, limit: 100}]",
    )
    c.at_least("evaluator.batch_size", 1)
    c.at_least("evaluator.every_n_steps", 1)
    c.settings_list("evaluator.settings", "evaluator.respacing")


def validate_pipeline(c: _Checks) -> None:
    """PipelineConfig (restore; eval adds its own checks)."""
    from lightning_dr2.dr2.remover import SettingError, check_sampler

    c.at_least("dr2.respacing", 2, " (the number of steps of the respaced grid, e.g. 100)")
    c.dr2_settings("dr2.", c.value("dr2.N"), c.value("dr2.tau"), c.value("dr2.omega"), c.value("dr2.respacing"))
    try:
        check_sampler(c.value("dr2.sampler"), c.value("dr2.eta"))
    except SettingError as err:
        c.fail(f"dr2.{err.name}", err.value, err.reason)
    c.at_least("enhancer.size", 1, ": the enhancer's input/output size in pixels (e.g. 512)")
    c.at_least("batch_size", 1)
    c.at_least("num_workers", 0)
    c.one_of("dtype", ("auto", "fp32", "bf16", "fp16"))
    c.accelerator("accelerator")


def validate_restore(c: _Checks) -> None:
    validate_pipeline(c)
    c.at_least("limit", 0, " (0: every image)")


# A row label, part of a W&B run id and a folder name; no '.', which would nest the `predictions.<method>` key.
METHOD_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_+-]*")


def validate_eval(c: _Checks) -> None:
    validate_pipeline(c)
    for method, folder in c.value("predictions").items():
        if not METHOD_NAME.fullmatch(method):
            c.fail(f"predictions.{method}", folder, "needs a method name of letters, digits and _+- (e.g. GFPGAN)")
        if not folder:
            c.fail(f"predictions.{method}", folder, "must be the folder of that method's restored images")
    c.require(
        "settings",
        lambda v: len(v) > 0 or c.value("predictions") or c.value("reference"),
        "leaves nothing to evaluate: list DR2 (N, tau) settings, predictions.<method>=DIR, or reference=true",
    )
    c.settings_list("settings", "dr2.respacing")
    for i in range(len(c.value("sets"))):
        c.at_least(f"sets[{i}].limit", 0, " (0: every image)")
    c.one_of("lpips_net", ("vgg", "alex"))
    c.at_least("report_images", 0)
    c.at_least("report_worst", 0)


def validate_cache(c: _Checks) -> None:
    validate_pipeline(c)
    c.one_of("enhancer.name", ("none",), ": the cache stores DR2 outputs, the enhancer's training inputs")
    c.require("settings", lambda v: len(v) > 0, "must list at least one (N, tau), e.g. [{N: 8, tau: 35}]")
    c.settings_list("settings", "dr2.respacing")
    c.at_least("samples_per_image", 1)
    c.at_least("limit", 0, " (0: every image)")


VALIDATORS: dict[type, Callable[[_Checks], None]] = {
    ExperimentConfig: validate_training,
    RestoreConfig: validate_restore,
    EvalConfig: validate_eval,
    CacheConfig: validate_cache,
}


def validate(cfg: DictConfig, source: str) -> None:
    """Run the value checks of `cfg`'s schema (schemas without checks pass)."""
    check = VALIDATORS.get(OmegaConf.get_type(cfg))
    if check is not None:
        check(_Checks(cfg, source))


def resolve_run_name(cfg: DictConfig) -> str:
    """The run id, chosen once: explicit > $DR2_RUN > $SLURM_JOB_ID > timestamp.

    It is exported as $DR2_RUN so processes Lightning launches for DDP (which re-run the command)
    agree on it, and a SLURM requeue (same job id) lands in the same run directory and W&B run.
    """
    run = cfg.run or os.environ.get("DR2_RUN") or os.environ.get("SLURM_JOB_ID") or time.strftime("%Y%m%d-%H%M%S")
    os.environ["DR2_RUN"] = str(run)
    return str(run)


def run_dir(cfg: DictConfig) -> Path:
    return Path(cfg.runs_dir) / cfg.experiment / str(cfg.run)


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
