"""One registry network alone over a folder: `restore method=<network>` (a baseline, fed as its own inference
script feeds it) and the enhancer stage of eval's `DR2+<network>` rows (over DR2's saved outputs, fed as DR2E's
enhancer stage is: bicubic up to the network's size).

The same predict job as restore (`jobs.predict_engine.run_predict`: multi-GPU, resumable, written batch by batch),
fingerprinted by the input file, the network's sha256, its options and the feed; outputs in OUTPUT/restored,
quantised as the scripts' `tensor2img(min_max=(-1, 1))` does (clamp, round to uint8), and a manifest.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch
from omegaconf import DictConfig

from lightning_dr2.config.methods import Method, restorer_choice
from lightning_dr2.datasets.predict_inputs import FEEDS, RestorerInputs
from lightning_dr2.dr2.pipeline import Networks, draws_noise, load_config_unet, resolve_dtype
from lightning_dr2.exports.restorer import LoadedRestorer, load_restorer
from lightning_dr2.jobs import predict_engine as engine
from lightning_dr2.modules.predict import RestorerModule
from lightning_dr2.nets.loading import WeightsError
from lightning_dr2.nets.restorers import RESTORERS, MissingExtraError
from lightning_dr2.weights import MissingWeightsError

log = logging.getLogger(__name__)


def load_method_network(cfg: Any, network: str, weights_dir: str | None = None) -> LoadedRestorer:
    """Registry network `network` with the file and options the config gives it (`config.methods.restorer_choice`)."""
    choice = restorer_choice(cfg, network)
    loaded = load_restorer(network, choice["weights"], choice["options"], weights_dir)
    assert loaded is not None  # `network` is a registry name, never "none"
    if choice.get("size") is not None and choice["size"] != loaded.size:
        raise ValueError(f"restorers: {network} works at {loaded.size}x{loaded.size}, not size={choice['size']}")
    return loaded


@dataclass
class MethodNetworks:
    """What eval's `methods` run, loaded once per run: DR2's UNet (None without a DR2 method), each registry network
    by name, and the methods skipped because a file or extra is missing (skip_missing_weights=true), with why."""

    unet: Networks | None
    restorers: dict[str, LoadedRestorer]
    skipped: dict[str, str] = field(default_factory=dict)


def load_method_networks(cfg: Any, methods: list[Method], weights_dir: str | None = None) -> MethodNetworks:
    """Every network `methods` need, loaded before any work. Files (or optional extras) that are missing are
    reported together in one error naming each; with `skip_missing_weights=true` the methods needing them are
    skipped (listed in `skipped`) and the rest run."""
    problems: dict[str, str] = {}
    unet = None
    if any(m.dr2 for m in methods):
        try:
            unet = Networks(load_config_unet(cfg, weights_dir), None)
        except (MissingWeightsError, WeightsError, MissingExtraError) as err:
            problems["DR2 UNet (unet_weights)"] = str(err)
    restorers = {}
    for network in dict.fromkeys(m.network for m in methods if m.network is not None):
        try:
            restorers[network] = load_method_network(cfg, network, weights_dir)
        except (MissingWeightsError, WeightsError, MissingExtraError) as err:
            problems[network] = str(err)
    if problems and not cfg.skip_missing_weights:
        listing = "\n".join(f"- {what}: {why}" for what, why in problems.items())
        raise MissingWeightsError(
            f"methods {[m.name for m in methods]} need files that cannot be loaded (nothing was run):\n{listing}\n"
            "Get them (python -m lightning_dr2 weights --for eval_dr2_table lists every file and where to get it), "
            "or skip those methods with skip_missing_weights=true"
        )
    skipped = {
        m.name: problems.get(m.network or "", "") or problems.get("DR2 UNet (unet_weights)", "")
        for m in methods
        if (m.dr2 and unet is None) or (m.network is not None and m.network not in restorers)
    }
    for name, why in skipped.items():
        log.warning("method %s skipped (skip_missing_weights=true): %s", name, why.splitlines()[0])
    return MethodNetworks(unet, restorers, skipped)


def network_settings(cfg: DictConfig, loaded: LoadedRestorer, feed: str) -> dict[str, Any]:
    """Everything besides the input file that determines an output of a network run alone (recorded, fingerprinted):
    the network as loaded (name, sha256, options, size), how inputs reach its size, precision and seeds."""
    return {
        "network": loaded.name,
        "network_sha256": loaded.sha256,
        "network_options": loaded.options,
        "size": loaded.size,
        "feed": feed,
        "base_seed": cfg.seed if draws_noise(loaded) else None,  # noise seeds derive from it and the image name
        "dtype": cfg.dtype,
        "input_policy": cfg.input_policy,
    }


def run_network(
    cfg: DictConfig, loaded: LoadedRestorer, feed: str | None = None, rels: list[str] | None = None
) -> tuple[engine.PredictResult, engine.Inputs]:
    """Run `loaded` alone on `cfg.input` into `cfg.output`. `feed`: how inputs reach the network's size (default:
    its script's, `RestorerSpec.resize`); `rels`: these inputs only (default: the folder's, first `cfg.limit`).
    Returns what the predict job did and the inputs it found."""
    feed = feed or RESTORERS[loaded.name].resize
    if feed not in FEEDS:
        raise ValueError(f"feed must be one of {FEEDS}, got {feed!r}")
    if loaded.size is None:
        raise ValueError(f"network {loaded.name!r} states no size; it cannot be run alone")
    input_dir, output_dir = engine.checked_folders("restore", ("--input", cfg.input), ("--output", cfg.output))
    inputs = engine.list_inputs(input_dir, output_dir, cfg.limit)
    todo_rels = inputs.rels if rels is None else [r for r in rels if r in set(inputs.rels)]
    accelerator = engine.resolve_accelerator(cfg.accelerator)
    dtype = resolve_dtype(cfg.dtype, torch.device("cuda" if accelerator == "gpu" else "cpu"))
    module = RestorerModule(loaded, dtype)
    size = loaded.size
    result = engine.run_predict(
        cfg,
        input_dir,
        output_dir,
        {rel: (rel, {}) for rel in todo_rels},
        inputs.unusable if rels is None else [],
        network_settings(cfg, loaded, feed),
        module,
        lambda todo: RestorerInputs(input_dir, todo, size, cfg.seed, cfg.input_policy, feed),
        "restore_config.yaml",
        save_dr2=False,
    )
    if result.records is not None:
        log.info("%s: made %d, reused %d -> %s", loaded.name, len(result.made()), len(result.reused), output_dir)
    return result, inputs
