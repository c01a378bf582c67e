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

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

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
    # Options a weight file decides by its keys (e.g. spectral norm or not); merged over the caller's options.
    options_for_file: Callable[[Mapping[str, Tensor]], dict[str, Any]] = _no_file_options
    finalize: Callable[[nn.Module], nn.Module] = _unchanged  # after loading, for inference (e.g. fold spectral norm)


def _sparnet_file_options(state_dict: Mapping[str, Tensor]) -> dict[str, Any]:
    """Released SPARNet files carry `weight_orig/_u/_v` (spectral norm); folded exports plain `weight`."""
    return {"spectral_norm": any(key.endswith(".weight_orig") for key in state_dict)}


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
