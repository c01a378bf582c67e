"""Schema of the enhancer training recipes (`experiments/enhance_*.yaml`, `train-enhancer`).

Defaults are the published SPARNetHD recipe where one exists (generator, discriminator, losses,
optimisers, EMA). What DR2's release does not publish is ours and marked as such: the blur sigma range,
the (N, tau) drawn per image, and that x is fed to DR2 clean.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lightning_dr2.config.ddpm import NetConfig
from lightning_dr2.config.loader import Checks, in_unit_interval
from lightning_dr2.config.run import EMAConfig, RunConfig
from lightning_dr2.config.sets import SettingConfig, check_settings_list, demo_settings
from lightning_dr2.diffusion import DiffusionRequest
from lightning_dr2.nets.unet import DR2_FFHQ256_FLAGS


@dataclass
class GeneratorConfig:
    """A trainable network of `lightning_dr2.nets.restorers.RESTORERS` (sparnethd | sparnet | unet) and its options."""

    name: str = "sparnethd"
    options: dict[str, Any] = field(default_factory=dict)
    # Fine-tuning: a state dict (e.g. a published SPARNetHD checkpoint) loaded strictly into the generator.
    init_weights: str | None = None


@dataclass
class DiscriminatorConfig:
    """Multi-scale PatchGAN (`nets.discriminator`); the defaults are SPARNetHD's (11.75 M parameters)."""

    base_ch: int = 64
    max_ch: int = 512
    layers: int = 4
    scales: int = 3
    norm: str = "in"
    spectral_norm: bool = True


@dataclass
class GanLossConfig:
    """Generator loss weights (published: L1 x100, VGG19 perceptual x1, feature matching x10, hinge GAN x1)."""

    l1: float = 100.0
    vgg: float = 1.0
    fm: float = 10.0
    gan: float = 1.0
    ssim: float = 0.0  # ours (not published): weight of a 1 - SSIM term; 0 = off
    # None: vgg19-dcbb9e9d.pth through the weights registry; a path; or "random" (tests / tiny recipe only).
    vgg_weights: str | None = None


@dataclass
class GanOptimConfig:
    """Adam for G and D, constant learning rate (published: G 1e-4, D 4e-4, betas (0.5, 0.99))."""

    lr_g: float = 1e-4
    lr_d: float = 4e-4
    betas: list[float] = field(default_factory=lambda: [0.5, 0.99])


@dataclass
class PairDataConfig:
    """Training pairs (y = DR2(x) blurred by k_sigma, x); see `datasets.enhancer_data`."""

    mode: str = "folder"  # folder: DR2 outputs in dr2_root | on_the_fly: DR2 runs on each batch
    hq_root: str = "data/ffhq"
    dr2_root: str | None = None  # folder mode: <dr2_root>/<rel>.png per HQ face <rel> (restore's OUTPUT/dr2)
    size: int = 512  # the enhancer's resolution; DR2 outputs are bicubic-upsampled to it
    batch_size: int = 2  # per device
    num_workers: int = 4
    val_n: int = 8  # validation faces (fixed pairs; the first ones make the grid)
    synthetic_n: int = 0  # > 0: fill an empty hq_root with this many synthetic faces first
    # OUR choice (not published): sigma of k_sigma in enhancer pixels, uniform in this range.
    blur_sigma: list[float] = field(default_factory=lambda: [0.1, 3.0])
    flip: bool = True
    color_jitter: float = 0.0  # brightness/contrast/saturation strength, applied to both images; 0 = off


@dataclass
class DR2SourceConfig:
    """The DR2 that made (folder mode: documents) or makes (on_the_fly mode) the training inputs."""

    unet_weights: str | None = None  # file, registry name or "random"; default DR2_FFHQ.pkl; a sidecar wins
    net: NetConfig = field(default_factory=lambda: NetConfig(**DR2_FFHQ256_FLAGS))
    # Only the fields given (None = not given): a UNet sidecar's process wins over the others, as for restore.
    diffusion: DiffusionRequest = field(default_factory=DiffusionRequest)
    respacing: int = 100
    # OUR choice (not published): (N, tau) drawn uniformly per image from DR2's demo settings.
    settings: list[SettingConfig] = field(default_factory=demo_settings)


@dataclass
class EnhanceExperimentConfig(RunConfig):
    """`train-enhancer`: the second training stage. `trainer.max_steps`, `trainer.val_check_interval`,
    `checkpoint.every_n_steps` and `evaluator.every_n_steps` count iterations (one D step + one G step each).

    `evaluator`: benchmark metrics of DR2 + the EMA generator while training; the DR2 stage runs the frozen
    UNet of `dr2` (weights, net, diffusion) with the evaluator's own settings and respacing."""

    experiment: str = "enhance_tiny"
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    loss: GanLossConfig = field(default_factory=GanLossConfig)
    optim: GanOptimConfig = field(default_factory=GanOptimConfig)
    ema: EMAConfig = field(default_factory=lambda: EMAConfig(decay=0.999, warmup=False))
    data: PairDataConfig = field(default_factory=PairDataConfig)
    dr2: DR2SourceConfig = field(default_factory=DR2SourceConfig)

    @staticmethod
    def check(c: Checks) -> None:
        from lightning_dr2.nets.restorers import trainable_names

        RunConfig.check(c)
        c.one_of("generator.name", trainable_names(), ": the networks train-enhancer can train")
        for key in ("optim.lr_g", "optim.lr_d"):
            c.require(key, lambda v: v > 0, "must be > 0 (published: lr_g=1e-4, lr_d=4e-4)")
        c.require(
            "optim.betas",
            lambda v: len(v) == 2 and all(in_unit_interval(b) for b in v),
            "must be two values in [0, 1) (Adam's beta1, beta2), e.g. optim.betas=[0.5,0.99]",
        )
        for key in ("loss.l1", "loss.vgg", "loss.fm", "loss.gan", "loss.ssim"):
            c.require(key, lambda v: v >= 0, "must be >= 0 (0 turns that loss off)")
        c.unit_interval("ema.decay", " (e.g. 0.999)")
        c.one_of("data.mode", ("folder", "on_the_fly"))
        c.at_least("data.size", 1, ": the enhancer's resolution in pixels")
        c.at_least("data.batch_size", 1, " (pairs per device and iteration)")
        c.at_least("data.num_workers", 0)
        c.at_least("data.val_n", 0)
        c.at_least("data.synthetic_n", 0)
        c.require(
            "data.blur_sigma",
            lambda v: len(v) == 2 and 0 <= v[0] <= v[1],
            "must be [low, high] with 0 <= low <= high (k_sigma's sigma in enhancer pixels)",
        )
        c.require("data.color_jitter", lambda v: v >= 0, "must be >= 0 (0 turns it off)")
        c.at_least("dr2.respacing", 2, " (the number of steps of the respaced grid, e.g. 100)")
        c.require("dr2.settings", lambda v: len(v) > 0, "must list at least one (N, tau), e.g. [{N: 8, tau: 35}]")
        check_settings_list(c, "dr2.settings", "dr2.respacing")
