"""Schema of the DDPM training recipes (`experiments/ddpm_*.yaml`, `quickstart.yaml`; the `train` command)."""

from __future__ import annotations

from dataclasses import dataclass, field

from lightning_dr2.config.loader import Checks, in_unit_interval
from lightning_dr2.config.run import EMAConfig, RunConfig
from lightning_dr2.diffusion import DiffusionConfig


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
class SamplingConfig:
    """Fixed-seed sample grids from the EMA weights during and after training."""

    every_n_steps: int = 5000
    num_samples: int = 16
    method: str = "ddim"  # ddim | ddpm
    steps: int = 50
    eta: float = 0.0
    seed: int = 0


@dataclass
class DDPMConfig(RunConfig):
    """`python -m lightning_dr2 train`: a DDPM (the UNet DR2 runs) on a face folder."""

    net: NetConfig = field(default_factory=NetConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    ema: EMAConfig = field(default_factory=EMAConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)

    @staticmethod
    def check(c: Checks) -> None:
        RunConfig.check(c)
        c.require(
            "optim.betas",
            lambda v: len(v) == 2 and all(in_unit_interval(b) for b in v),
            "must be two values in [0, 1) (Adam's beta1, beta2), e.g. optim.betas=[0.9,0.999]",
        )
        c.require("optim.lr", lambda v: v > 0, "must be > 0 (e.g. 1e-4)")
        c.require("optim.weight_decay", lambda v: v >= 0, "must be >= 0")
        c.require("optim.grad_clip", lambda v: v >= 0, "must be >= 0 (0 turns clipping off)")
        c.at_least("optim.warmup_steps", 0)
        c.unit_interval("ema.decay", " (e.g. 0.9999)")
        c.at_least("data.image_size", 1)
        c.at_least("data.batch_size", 1, " (images per device and step)")
        c.at_least("data.num_workers", 0, " (0 loads data in the main process)")
        c.unit_interval("data.val_fraction")
        c.at_least("data.val_max", 0)
        c.at_least("data.synthetic_n", 0)
        if c.value("data.synthetic"):
            c.at_least("data.synthetic_n", 1, ": data.synthetic=true trains on that many generated faces (e.g. 512)")
        c.one_of("sampling.method", ("ddim", "ddpm"))
        c.at_least("sampling.steps", 1)
        c.at_least("sampling.every_n_steps", 0, " (0: only at the end)")
        c.require("sampling.eta", lambda v: 0.0 <= v <= 1.0, "must be in [0, 1] (0: deterministic DDIM)")
