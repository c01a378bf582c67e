"""DR2E: DR2 followed by an enhancement module, from images in to restored images out.

    from lightning_dr2.dr2.pipeline import DR2E
    pipe = DR2E.from_weights("data/weights/DR2_FFHQ.pkl", enhancer="sparnethd")
    restored = pipe.restore(images)          # uint8 HxWx3 arrays (or a [-1, 1] tensor batch)

Steps: resize to the UNet size (bicubic, antialiased) -> DR2 (x0_hat at tau) -> clamp -> bicubic up to
the enhancer size -> enhancer (SPARNetHD by default) -> clamp.

DR2E takes modules and reads no files: `from_weights`/`from_config` load through `lightning_dr2.exports`
(`load_networks`), and a job that runs many settings loads the `Networks` once and builds a DR2E per setting
(`from_networks`, sharing the modules).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from lightning_dr2.diffusion import DiffusionConfig, DiffusionRequest
from lightning_dr2.dr2.remover import DR2, NoiseFn, SettingError
from lightning_dr2.exports.restorer import LoadedRestorer, load_restorer
from lightning_dr2.exports.unet import LoadedUNet, load_unet
from lightning_dr2.image_io import images_to_tensor, resize, to_uint8_images

# Without an enhancer (or with one that states no size): DR2's output is upsampled to 512, as released.
DEFAULT_ENHANCER_SIZE = 512


@dataclass(frozen=True)
class Networks:
    """The networks a DR2E runs, as loaded (see `lightning_dr2.exports`): loaded once, shared by every DR2E of a job."""

    unet: LoadedUNet
    enhancer: LoadedRestorer | None


def load_networks(cfg: Any, weights_dir: str | None = None) -> Networks:
    """The UNet and enhancer a `RestoreConfig`/`EvalConfig`/`CacheConfig` names (a UNet sidecar wins over net and
    the diffusion fields not given)."""
    from omegaconf import OmegaConf

    unet = load_unet(
        cfg.unet_weights,
        OmegaConf.to_container(cfg.net),
        weights_dir,
        DiffusionRequest(**OmegaConf.to_container(cfg.diffusion, resolve=True)),
    )
    options = OmegaConf.to_container(cfg.enhancer.options, resolve=True)
    return Networks(unet, load_restorer(cfg.enhancer.name, cfg.enhancer.weights, options, weights_dir))


class DR2E:
    """DR2 + enhancer; holds the networks, the DR2 settings and the precision/compile choices."""

    def __init__(
        self,
        unet: nn.Module,
        enhancer: nn.Module | None = None,
        N: int = 8,  # noqa: N803 (the paper's name)
        tau: int = 35,
        omega: int | None = None,
        respacing: int = 100,
        diffusion: DiffusionConfig | None = None,
        sampler: str = "ddpm",
        eta: float = 0.0,
        enhancer_size: int = DEFAULT_ENHANCER_SIZE,
        dtype: torch.dtype | None = None,
    ) -> None:
        if not isinstance(enhancer_size, int) or enhancer_size < 1:
            raise SettingError("enhancer_size", enhancer_size, "must be a positive number of pixels (e.g. 512)")
        self.dr2 = DR2(unet, respacing=respacing, diffusion=diffusion, sampler=sampler, eta=eta, dtype=dtype)
        self.enhancer = enhancer
        self.N, self.tau, self.omega = N, tau, omega
        self.enhancer_size = enhancer_size
        self.dtype = dtype
        self.image_size = int(getattr(unet, "image_size", 256))
        # What was loaded, when built from files (`from_networks`): the jobs record these, not the settings.
        self.loaded_unet: LoadedUNet | None = None
        self.loaded_enhancer: LoadedRestorer | None = None
        # Fail now, not after loading a folder: the settings must fit the UNet and the grid.
        self.dr2.check_setting(N, tau, omega, self.image_size)

    @property
    def omega_value(self) -> int:
        return self.dr2.resolve_omega(self.N, self.tau, self.omega)

    @property
    def unet(self) -> nn.Module:
        return self.dr2.unet

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @classmethod
    def from_networks(cls, networks: Networks, **settings: Any) -> DR2E:
        """From loaded networks (shared, not copied); `settings` go to `DR2E(...)`. The UNet runs the process it
        was loaded with; the enhancer runs at its own size (an `enhancer_size` that differs is an error naming
        both). The loaded records stay on the pipe (`loaded_unet`, `loaded_enhancer`) for the jobs' manifests."""
        enhancer = networks.enhancer
        native = None if enhancer is None else enhancer.size
        if native is not None:
            asked = settings.get("enhancer_size")
            if asked is not None and asked != native:
                raise ValueError(
                    f"enhancer '{enhancer.name}' works at {native}x{native}, not enhancer.size={asked}; "
                    "leave enhancer.size unset (it follows the network)"
                )
            settings["enhancer_size"] = native
        elif settings.get("enhancer_size") is None:
            settings["enhancer_size"] = DEFAULT_ENHANCER_SIZE
        pipe = cls(
            networks.unet.module,
            None if enhancer is None else enhancer.module,
            diffusion=networks.unet.diffusion,
            **settings,
        )
        pipe.loaded_unet, pipe.loaded_enhancer = networks.unet, enhancer
        return pipe

    @classmethod
    def from_weights(
        cls,
        unet: str | Path | None = None,
        enhancer: str = "sparnethd",
        enhancer_weights: str | None = None,
        enhancer_options: Mapping[str, Any] | None = None,
        unet_flags: Mapping[str, Any] | None = None,
        weights_dir: str | None = None,
        device: str | torch.device = "cpu",
        diffusion: DiffusionConfig | DiffusionRequest | None = None,
        **settings: Any,
    ) -> DR2E:
        """Build from weight files (paths, registry names, or "random"); `settings` go to `DR2E(...)`.

        The UNet's flags and diffusion come from its sidecar when it has one (see `exports.unet.load_unet`): a
        `DiffusionConfig` gives every field, a `DiffusionRequest` only those it sets.
        """
        networks = Networks(
            load_unet(unet, unet_flags, weights_dir, diffusion),
            load_restorer(enhancer, enhancer_weights, enhancer_options, weights_dir),
        )
        return cls.from_networks(networks, **settings).to(device)

    @classmethod
    def from_config(
        cls,
        cfg: Any,
        device: str | torch.device = "cpu",
        weights_dir: str | None = None,
        networks: Networks | None = None,
    ) -> DR2E:
        """From a `RestoreConfig`/`EvalConfig` (see lightning_dr2.config); `networks` already loaded from the same
        config (eval: once for every split and setting), else loaded now (`load_networks`)."""
        if networks is None:
            networks = load_networks(cfg, weights_dir)
        pipe = cls.from_networks(
            networks,
            **dict(cfg.dr2),  # DR2Settings: N, tau, omega, respacing, sampler, eta
            dtype=resolve_dtype(cfg.dtype, torch.device(device)),
            enhancer_size=cfg.enhancer.size,
        )
        return pipe.to(device)

    def to(self, device: str | torch.device) -> DR2E:
        self.unet.to(device)
        if self.enhancer is not None:
            self.enhancer.to(device)
        return self

    def optimize(self, compile: bool = False, channels_last: bool = True) -> DR2E:
        """channels_last weights/activations and optional torch.compile of both networks (GPU speed-ups)."""
        if channels_last:
            self.unet.to(memory_format=torch.channels_last)
            if self.enhancer is not None:
                self.enhancer.to(memory_format=torch.channels_last)
        if compile:
            self.dr2.unet = torch.compile(self.dr2.unet)
            if self.enhancer is not None:
                self.enhancer = torch.compile(self.enhancer)
        return self

    @torch.no_grad()
    def restore_tensors(
        self, lq: Tensor, seeds: Sequence[int] | None = None, noise: NoiseFn | None = None
    ) -> dict[str, Tensor]:
        """(B, 3, H, W) in [-1, 1], any H, W -> {"dr2": at the UNet size, "output": at the enhancer size}."""
        dr2 = self.remove_degradation(lq, seeds, noise)
        return {"dr2": dr2, "output": self.enhance(dr2)}

    @torch.no_grad()
    def remove_degradation(
        self, lq: Tensor, seeds: Sequence[int] | None = None, noise: NoiseFn | None = None
    ) -> Tensor:
        """The DR2 stage alone: (B, 3, H, W) in [-1, 1] -> DR2 outputs at the UNet size (default seeds 0..B-1)."""
        x = resize(lq.to(self.device).float(), self.image_size).clamp(-1, 1)
        if seeds is None and noise is None:
            seeds = list(range(x.shape[0]))
        return self.dr2(x, self.N, self.tau, self.omega, noise=noise, seeds=seeds).clamp(-1, 1)

    @torch.no_grad()
    def enhance(self, dr2: Tensor) -> Tensor:
        """The enhancement stage alone: DR2 outputs -> bicubic to the enhancer size -> enhancer (if any) -> clamp.

        Separate so that a caller with the DR2 outputs already at hand (the enhancer-training evaluator,
        whose UNet is frozen) runs exactly the inference path from there."""
        up = resize(dr2, self.enhancer_size).clamp(-1, 1)
        if self.enhancer is None:
            return up
        if self.dtype is not None and self.dtype != torch.float32:
            with torch.autocast(up.device.type, dtype=self.dtype):
                out = self.enhancer(up).float()
        else:
            out = self.enhancer(up)
        return out.clamp(-1, 1)

    def restore(
        self, images: Tensor | Sequence[np.ndarray], seeds: Sequence[int] | None = None
    ) -> Tensor | list[np.ndarray]:
        """Restore a [-1, 1] tensor batch, or a list of uint8 HxWx3 RGB arrays (returned as such)."""
        if isinstance(images, Tensor):
            return self.restore_tensors(images, seeds)["output"]
        return to_uint8_images(self.restore_tensors(images_to_tensor(images), seeds)["output"])


def resolve_dtype(name: str, device: torch.device) -> torch.dtype | None:
    """`auto`: bf16 autocast on CUDA, fp32 elsewhere."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    table = {"fp32": None, "float32": None, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16}
    if name not in table:
        raise ValueError(f"dtype must be auto, fp32, bf16 or fp16; got {name!r}")
    return table[name]
