"""Schemas of the jobs that run DR2 (+ an enhancer) on images: `restore`, `eval` and `dr2-cache`."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, ClassVar

from lightning_dr2.config.ddpm import NetConfig
from lightning_dr2.config.loader import Checks
from lightning_dr2.config.run import WandbConfig
from lightning_dr2.config.sets import (
    EvalSetConfig,
    SettingConfig,
    check_dr2_setting,
    check_settings_list,
    demo_settings,
)
from lightning_dr2.diffusion import DiffusionRequest
from lightning_dr2.metrics.catalogue import default_metrics
from lightning_dr2.nets.unet import DR2_FFHQ256_FLAGS


@dataclass
class EnhancerConfig:
    """The enhancement module after DR2 (`none`, or any name in `nets.restorers.RESTORERS`)."""

    name: str = "sparnethd"
    weights: str | None = None  # default: the registry's file for this enhancer (e.g. SPARNetHD_FFHQ_DR2aug.pth)
    # The enhancer's input/output resolution; DR2's output is bicubic-upsampled to it. Unset: the network's own
    # size (512 without one). A network runs only at its own size: another value is an error naming both.
    size: int | None = None
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

    `net` describes the UNet in `unet_weights` when it has no `<weights>.json` sidecar (default: the published
    DR2 FFHQ-256 network). `diffusion` holds only the fields given (`DiffusionRequest`, None = not given): an
    exported UNet's sidecar records the flags and the process the network was trained with and wins over `net`
    and the fields not given; a given field that contradicts it is an error naming both (see
    `exports.unet.resolve_diffusion`), never a silently different process. Without a sidecar the given fields
    replace those of the published linear/1000/eps process.
    """

    unet_weights: str | None = None  # file, registry name, or "random"; default DR2_FFHQ.pkl from the registry
    net: NetConfig = field(default_factory=lambda: NetConfig(**DR2_FFHQ256_FLAGS))  # a <weights>.json sidecar wins
    diffusion: DiffusionRequest = field(default_factory=DiffusionRequest)  # only what is given (see the docstring)
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

    @staticmethod
    def check(c: Checks) -> None:
        from lightning_dr2.dr2.remover import SettingError, check_sampler

        c.at_least("dr2.respacing", 2, " (the number of steps of the respaced grid, e.g. 100)")
        dr2 = c.value("dr2")
        check_dr2_setting(c, "dr2.", dr2["N"], dr2["tau"], dr2["omega"], dr2["respacing"])
        try:
            check_sampler(c.value("dr2.sampler"), c.value("dr2.eta"))
        except SettingError as err:
            c.fail(f"dr2.{err.name}", err.value, err.reason)
        c.require(
            "enhancer.size",
            lambda v: v is None or v >= 1,
            "must be >= 1: the enhancer's input/output size in pixels (e.g. 512), or unset for the network's own",
        )
        c.at_least("batch_size", 1)
        c.at_least("num_workers", 0)
        c.one_of("dtype", ("auto", "fp32", "bf16", "fp16"))
        c.accelerator("accelerator")


@dataclass
class RestoreConfig(PipelineConfig):
    """`python -m lightning_dr2 restore`: DR2 (+ enhancer) over folders of aligned faces."""

    experiment: str = "restore"
    input: str | None = None
    output: str | None = None
    limit: int = 0  # restore only the first `limit` images (sorted by path); 0 = all
    save_dr2: bool = True  # also write the DR2 intermediate (x0_hat at tau)
    comparison: bool = False  # also write input | DR2 | output side by side

    # Keys a recipe or override must not set, and why (`config.recipes.load_config` refuses them).
    IGNORED_KEYS: ClassVar[dict[str, str]] = {"input": "is given by --input", "output": "is given by --output"}

    @staticmethod
    def check(c: Checks) -> None:
        PipelineConfig.check(c)
        c.at_least("limit", 0, " (0: every image)")


@dataclass
class SweepConfig:
    """The paper's (N, tau) ablation as one run: `sweep.N=[4,8,16] sweep.tau=[20,35,50]` evaluates every
    pair (omega by the official rule) in place of `settings`, and the report plots each metric against tau,
    one line per N. W&B sweeps can drive the same keys (experiments/sweeps/n_tau.yaml)."""

    N: list[int] = field(default_factory=list)
    tau: list[int] = field(default_factory=list)


# A row label, part of a W&B run id and a folder name; no '.', which would nest the `predictions.<method>` key.
METHOD_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_+-]*")


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

    IGNORED_KEYS: ClassVar[dict[str, str]] = {
        f"dr2.{key}": "is not used by eval, which runs each of `settings` (or the sweep): list the (N, tau) there"
        for key in ("N", "tau", "omega")
    }

    @staticmethod
    def check(c: Checks) -> None:
        PipelineConfig.check(c)
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
        check_settings_list(c, "settings", "dr2.respacing")
        for i in range(len(c.value("sets"))):
            c.at_least(f"sets[{i}].limit", 0, " (0: every image)")
        c.one_of("lpips_net", ("vgg", "alex"))
        c.at_least("report_images", 0)
        c.at_least("report_worst", 0)


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

    IGNORED_KEYS: ClassVar[dict[str, str]] = {
        "hq": "is given by --hq",
        "out": "is given by --out",
        **{
            f"dr2.{key}": "is not used by dr2-cache: each output draws its (N, tau) from `settings`; list them there"
            for key in ("N", "tau", "omega")
        },
    }

    @staticmethod
    def check(c: Checks) -> None:
        PipelineConfig.check(c)
        c.one_of("enhancer.name", ("none",), ": the cache stores DR2 outputs, the enhancer's training inputs")
        c.require("settings", lambda v: len(v) > 0, "must list at least one (N, tau), e.g. [{N: 8, tau: 35}]")
        check_settings_list(c, "settings", "dr2.respacing")
        c.at_least("samples_per_image", 1)
        c.at_least("limit", 0, " (0: every image)")
