"""DR2E: DR2 followed by an enhancement module, from images in to restored images out.

    from lightning_dr2.dr2.pipeline import DR2E
    pipe = DR2E.from_weights("data/weights/DR2_FFHQ.pkl", enhancer="sparnethd")
    restored = pipe.restore(images)          # uint8 HxWx3 arrays (or a [-1, 1] tensor batch)

Steps: resize to the UNet size (bicubic, antialiased) -> DR2 (x0_hat at tau) -> clamp -> bicubic up to
the enhancer size -> enhancer (SPARNetHD by default) -> clamp.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from lightning_dr2.diffusion import DiffusionConfig
from lightning_dr2.dr2.enhancer_export import load_exported_enhancer, read_enhancer_sidecar
from lightning_dr2.dr2.remover import DR2, NoiseFn, SettingError
from lightning_dr2.dr2.sidecar import (
    net_learns_sigma,
    published_process,
    read_sidecar,
    resolve_diffusion,
    sidecar_path,
)
from lightning_dr2.exports.locate import locate_weights
from lightning_dr2.image_io import images_to_tensor, resize, to_uint8_images
from lightning_dr2.nets.loading import WeightsError, load_into, read_state_dict
from lightning_dr2.nets.restorers import RESTORERS, build_restorer
from lightning_dr2.nets.unet import DR2_FFHQ256_FLAGS, UNet

DEFAULT_UNET_FILE = "DR2_FFHQ.pkl"
RANDOM = "random"  # weights="random": random initialisation (tests, benchmarks), never a silent default


def build_enhancer(
    name: str, weights: str | None = None, options: Mapping[str, Any] | None = None, weights_dir: str | None = None
) -> nn.Module | None:
    """The enhancer after DR2: `none`; a train-enhancer export (its JSON names the network); or a registered
    restoration network with random weights (`weights="random"`), its released file (`weights=None`) or a file."""
    if name == "none":
        return None
    if read_enhancer_sidecar(weights) is not None:
        return load_exported_enhancer(weights, options)
    spec = RESTORERS[name]
    if weights == RANDOM:
        return spec.finalize(build_restorer(name, options).eval())
    if weights is None and spec.weights is None:
        raise WeightsError(
            f"restoration network {name!r} has no released weights: give enhancer.weights=FILE "
            "(e.g. a train-enhancer export) or enhancer.weights=random for tests"
        )
    path = locate_weights(weights, spec.weights, weights_dir)  # type: ignore[arg-type]
    state = read_state_dict(path)
    net = build_restorer(name, {**dict(options or {}), **spec.options_for_file(state)})
    return spec.finalize(load_into(net, state, path).eval())


def load_unet(
    weights: str | Path | None = None,
    flags: Mapping[str, Any] | None = None,
    weights_dir: str | None = None,
    diffusion: DiffusionConfig | None = None,
) -> tuple[UNet, DiffusionConfig]:
    """The DR2 UNet and the diffusion it runs: `weights` = a file, a registry name, None (DR2_FFHQ.pkl), or "random".

    A `<file>.json` sidecar next to the weights (written by our exports, see `dr2.sidecar`) wins: its
    flags over `flags`, its process over `diffusion` (a `diffusion` that sets a field away from its
    default and contradicts the sidecar is an error). Without one: `flags` (default: the DR2 FFHQ-256
    flags) and `diffusion` (default: the published linear/1000/eps process). learn_sigma always
    follows the network's flags.
    """
    if weights == RANDOM:
        net = UNet.from_flags(dict(flags or DR2_FFHQ256_FLAGS)).eval()
        return net, _given_process(net.flags, diffusion)
    path = locate_weights(None if weights is None else str(weights), DEFAULT_UNET_FILE, weights_dir)
    recorded = read_sidecar(path)
    if recorded is None:
        net = UNet.from_flags(dict(flags or DR2_FFHQ256_FLAGS))
        process = _given_process(net.flags, diffusion)
    else:
        net = UNet.from_flags(recorded[0])
        process = resolve_diffusion(recorded[1], diffusion, sidecar_path(path))
    return load_into(net, read_state_dict(path), path).eval(), process


def _given_process(flags: Mapping[str, Any], diffusion: DiffusionConfig | None) -> DiffusionConfig:
    """The caller's process (or the published one) for weights that record none."""
    return published_process(flags) if diffusion is None else diffusion.for_network(net_learns_sigma(flags))


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
        enhancer_size: int = 512,
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
    def from_weights(
        cls,
        unet: str | Path | None = None,
        enhancer: str = "sparnethd",
        enhancer_weights: str | None = None,
        enhancer_options: Mapping[str, Any] | None = None,
        unet_flags: Mapping[str, Any] | None = None,
        weights_dir: str | None = None,
        device: str | torch.device = "cpu",
        diffusion: DiffusionConfig | None = None,
        **settings: Any,
    ) -> DR2E:
        """Build from weight files (paths, registry names, or "random"); `settings` go to `DR2E(...)`.

        The UNet's flags and diffusion come from its sidecar when it has one (see `load_unet`).
        """
        net, process = load_unet(unet, unet_flags, weights_dir, diffusion)
        enh = build_enhancer(enhancer, enhancer_weights, enhancer_options, weights_dir)
        native = getattr(enh, "size", None)
        if native is not None and settings.get("enhancer_size", native) != native:
            raise ValueError(
                f"enhancer '{enhancer}' works at {native}x{native}, not enhancer.size={settings['enhancer_size']}; "
                "leave enhancer.size at the network's size"
            )
        if native is not None:
            settings["enhancer_size"] = int(native)
        return cls(net, enh, diffusion=process, **settings).to(device)

    @classmethod
    def from_config(cls, cfg: Any, device: str | torch.device = "cpu", weights_dir: str | None = None) -> DR2E:
        """From a `RestoreConfig`/`EvalConfig` (see lightning_dr2.config; a UNet sidecar wins over net/diffusion)."""
        from omegaconf import OmegaConf

        dtype = resolve_dtype(cfg.dtype, torch.device(device))
        return cls.from_weights(
            unet=cfg.unet_weights,
            enhancer=cfg.enhancer.name,
            enhancer_weights=cfg.enhancer.weights,
            enhancer_options=OmegaConf.to_container(cfg.enhancer.options),
            unet_flags=OmegaConf.to_container(cfg.net),
            weights_dir=weights_dir,
            device=device,
            N=cfg.dr2.N,
            tau=cfg.dr2.tau,
            omega=cfg.dr2.omega,
            respacing=cfg.dr2.respacing,
            diffusion=DiffusionConfig.from_dict(OmegaConf.to_container(cfg.diffusion, resolve=True)),
            sampler=cfg.dr2.sampler,
            eta=cfg.dr2.eta,
            dtype=dtype,
            **({"enhancer_size": cfg.enhancer.size} if cfg.enhancer.name == "none" else {}),
        )

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
