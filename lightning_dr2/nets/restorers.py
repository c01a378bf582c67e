"""The one registry of restoration networks: what `train-enhancer` trains, what DR2E runs after DR2, and the
baselines `eval`/`restore` run alone.

Each `RestorerSpec` knows how to build the architecture (random weights), its released weight file (found by
its released name through the weights lookup and loaded in its released key layout), the call options of the
method's own inference script, and how that script feeds an aligned face. Every built module has one forward:
(B, 3, S, S) RGB in [-1, 1] at its native size S -> the restored image, same shape and range; call options
(CodeFormer's fidelity weight, ...) are constructor options stored on the module. Reading files is the job of
`lightning_dr2.exports`; this module only builds.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from torch import Tensor, nn

from lightning_dr2.nets.gpen import GPEN
from lightning_dr2.nets.plain_unet import PlainUNet
from lightning_dr2.nets.sparnet import SPARNet, fold_spectral_norm
from lightning_dr2.registry import Registry


def _unchanged(net: nn.Module) -> nn.Module:
    return net


def _no_file_options(state_dict: Mapping[str, Tensor]) -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class RestorerSpec:
    """One restoration network of the registry (see the module docstring for the forward contract)."""

    build: Callable[..., nn.Module]  # options -> the architecture with random weights
    description: str
    size: int | None = 512  # native square size; None: the `size` option decides (configurable generators)
    weights: str | None = None  # released file name in the weights registry; None: nothing released
    defaults: Mapping[str, Any] = field(default_factory=dict)  # call options as the method's inference script sets them
    # How the method's own inference script feeds an aligned face (size, resize, value range, colour order):
    # what a baseline run of it reproduces.
    feed: str = "RGB in [-1, 1] at the native size"
    resize: str = "bicubic"  # inputs of another size: bicubic (antialiased) | cv2_linear (cv2.resize INTER_LINEAR)
    licence: str = ""
    extra: str | None = None  # the optional dependency group it needs: pip install 'lightning_dr2[<extra>]'
    trainable: bool = False  # a generator `train-enhancer` can train (generator.name)
    # forward draws random noise (StyleGAN2 noise injection) and takes `seeds=` (one per image) to draw it
    # reproducibly, independent of the batch an image is in.
    draws_noise: bool = False
    # Options a weight file decides by its keys (e.g. spectral norm or not); merged over the caller's options.
    options_for_file: Callable[[Mapping[str, Tensor]], dict[str, Any]] = _no_file_options
    finalize: Callable[[nn.Module], nn.Module] = _unchanged  # after loading, for inference (e.g. fold spectral norm)


def _sparnet_file_options(state_dict: Mapping[str, Tensor]) -> dict[str, Any]:
    """Released SPARNet files carry `weight_orig/_u/_v` (spectral norm); folded exports plain `weight`."""
    return {"spectral_norm": any(key.endswith(".weight_orig") for key in state_dict)}


class MissingExtraError(ImportError):
    """A restoration network needs an optional dependency group that is not installed."""


def import_extra(module: str, network: str, extra: str, note: str = "") -> ModuleType:
    """`module`, or an error naming the network, the pip extra that brings it and `note` (e.g. its licence)."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MissingExtraError(
            f"restoration network {network!r} needs the optional extra {extra!r}, which is not installed "
            f"({err}). Install it with: pip install 'lightning_dr2[{extra}]'. {note}".strip()
        ) from err


RESTORERS: Registry[RestorerSpec] = Registry("restoration network")

RESTORERS.add(
    "sparnethd",
    RestorerSpec(
        SPARNet.hd,
        "SPARNetHD 512 (Face-SPARNet); DR2's enhancer. Options override single config values",
        weights="SPARNetHD_FFHQ_DR2aug.pth",
        licence="Face-SPARNet architecture (CC BY-NC-SA 4.0 reference code; re-implemented here)",
        trainable=True,
        options_for_file=_sparnet_file_options,
        finalize=fold_spectral_norm,
    ),
)
RESTORERS.add(
    "sparnet",
    RestorerSpec(
        SPARNet,
        "any SPARNet config (e.g. a 64 px CPU one); options are SPARNet's constructor arguments",
        size=None,
        trainable=True,
        options_for_file=_sparnet_file_options,
        finalize=fold_spectral_norm,
    ),
)
RESTORERS.add(
    "unet",
    RestorerSpec(PlainUNet, "a plain U-Net baseline without attention (global residual)", size=None, trainable=True),
)


# --- face-prior baselines through spandrel (architectures ported there; keys = the released files') ---
def _gfpgan(**options: Any) -> nn.Module:
    from lightning_dr2.nets.spandrel_nets import GFPGANRestorer  # spandrel imports all its architectures

    return GFPGANRestorer(**options)


def _restoreformer(**options: Any) -> nn.Module:
    from lightning_dr2.nets.spandrel_nets import RestoreFormerRestorer

    return RestoreFormerRestorer(**options)


CODEFORMER_LICENCE = (
    "CodeFormer's code and released weights (sczhou/CodeFormer) are under the S-Lab License 1.0: "
    "non-commercial use only"
)


def _codeformer(**options: Any) -> nn.Module:
    import_extra("spandrel_extra_arches", "codeformer", "codeformer", f"{CODEFORMER_LICENCE}.")
    from lightning_dr2.nets.spandrel_codeformer import CodeFormerRestorer

    return CodeFormerRestorer(**options)


# How GFPGAN's inference_gfpgan.py --aligned (GFPGANer.enhance, has_aligned=True) and CodeFormer's
# inference_codeformer.py --has_aligned feed an aligned face; the output goes through tensor2img(min_max=(-1, 1)).
_ALIGNED_512_FEED = (
    "BGR uint8 face -> cv2.resize to 512x512 (INTER_LINEAR) -> /255 -> BGR->RGB -> normalize(mean 0.5, std 0.5): "
    "RGB in [-1, 1]; output clamped to [-1, 1]"
)
_GFPGAN_LICENCE = (
    "GFPGAN: Apache-2.0 (TencentARC/GFPGAN; its LICENSE lists StyleGAN2's third-party terms); spandrel port: MIT"
)
for _version in ("1.3", "1.4"):
    RESTORERS.add(
        f"gfpgan_v{_version}",
        RestorerSpec(
            _gfpgan,
            f"GFP-GAN v{_version} (GFPGANv1Clean: U-Net + StyleGAN2 decoder with SFT, 512 px) via spandrel; "
            "options out_size/num_style_feat/channel_multiplier/narrow for tiny test configs",
            weights=f"GFPGANv{_version}.pth",
            feed=f"inference_gfpgan.py --version {_version} --aligned: {_ALIGNED_512_FEED}",
            resize="cv2_linear",
            licence=_GFPGAN_LICENCE,
            draws_noise=True,
        ),
    )
RESTORERS.add(
    "restoreformer",
    RestorerSpec(
        _restoreformer,
        "RestoreFormer (VQ dictionary + multi-head cross-attention, 512 px) via spandrel; options are "
        "RestoreFormer's constructor arguments (tiny test configs)",
        weights="RestoreFormer.pth",
        feed=f"inference_gfpgan.py --version RestoreFormer --aligned: {_ALIGNED_512_FEED}",
        resize="cv2_linear",
        licence="RestoreFormer.pth from GFPGAN's release (GFPGAN: Apache-2.0; wzhouxiff/RestoreFormer states no "
        "licence); spandrel port: MIT",
    ),
)
RESTORERS.add(
    "codeformer",
    RestorerSpec(
        _codeformer,
        "CodeFormer (VQGAN codebook + transformer code prediction, 512 px) via spandrel-extra-arches; "
        "option w: fidelity weight in [0, 1]",
        weights="codeformer.pth",
        defaults={"w": 0.5},
        feed=f"inference_codeformer.py --has_aligned (w=0.5, adain=True): {_ALIGNED_512_FEED}",
        resize="cv2_linear",
        licence=f"{CODEFORMER_LICENCE}; spandrel-extra-arches port: MIT",
        extra="codeformer",
    ),
)


# --- VQFR v1 / v2, written here (nets/vqfr.py); VQFR's demo_util.py feeds an aligned face as GFPGANer does ---
_VQFR_FEED = f"demo.py --aligned (both versions): {_ALIGNED_512_FEED}"
_VQFR_LICENCE = "Apache-2.0 (TencentARC/VQFR code and released weights; re-implemented here)"


def _vqfr_v1(**options: Any) -> nn.Module:
    from lightning_dr2.nets.vqfr import VQFRv1

    return VQFRv1(**options)


def _vqfr_v2(**options: Any) -> nn.Module:
    from lightning_dr2.nets.vqfr import VQFRv2

    return VQFRv2(**options)


RESTORERS.add(
    "vqfr_v1",
    RestorerSpec(
        _vqfr_v1,
        "VQFR v1 (ECCV 2022): VQ codebook (nearest code) + parallel decoder with deformable texture warping",
        weights="VQFR_v1-33a1fac5.pth",
        feed=_VQFR_FEED,
        resize="cv2_linear",
        licence=_VQFR_LICENCE,
    ),
)
RESTORERS.add(
    "vqfr_v2",
    RestorerSpec(
        _vqfr_v2,
        "VQFR v2: predicted codes + parallel decoder; fidelity_ratio in [0, 1] (0: best quality, 1: best fidelity)",
        weights="VQFR_v2.pth",
        defaults={"fidelity_ratio": 0.0},  # demo.py -f default
        feed=_VQFR_FEED,
        resize="cv2_linear",
        licence=_VQFR_LICENCE,
    ),
)


# --- GPEN, written here (nets/gpen.py) ---
RESTORERS.add(
    "gpen_512",
    RestorerSpec(
        GPEN,
        "GPEN-BFR-512 (yangxy/GPEN, CVPR 2021): a StyleGAN2 prior fed by an encoder (its features replace the "
        "noise: no random draws); options: FullGenerator's size/style_dim/n_mlp/channel_multiplier/narrow/isconcat/"
        "lr_mlp, e.g. for tiny test configs",
        weights="GPEN-BFR-512.pth",
        feed="demo.py --task FaceEnhancement --aligned (face_gan.py FaceGAN.process): BGR uint8 face -> cv2.resize "
        "to 512x512 (INTER_LINEAR) -> /255 -> (x - 0.5) / 0.5 -> BGR->RGB: RGB in [-1, 1]; output * 0.5 + 0.5, "
        "clipped to [0, 1], * 255 truncated (not rounded) to uint8",
        resize="cv2_linear",
        licence="GPEN (c) Alibaba 2021: academic and non-commercial use only (released weights; reference code "
        "re-implemented here)",
    ),
)


def trainable_names() -> list[str]:
    """The generators `train-enhancer` can train."""
    return [name for name, spec in RESTORERS.items() if spec.trainable]


def build_restorer(name: str, options: Mapping[str, Any] | None = None) -> nn.Module:
    """The architecture `name` with random weights: the entry's defaults <- `options`; bad options name them."""
    spec = RESTORERS[name]
    merged = {**spec.defaults, **dict(options or {})}
    try:
        return spec.build(**merged)
    except TypeError as err:
        raise ValueError(f"restoration network {name!r}: bad options {merged}: {err}") from err


def native_size(net: nn.Module) -> int:
    """The square resolution a built restorer works at (every registered network has `.size`)."""
    return int(net.size)  # type: ignore[arg-type]
