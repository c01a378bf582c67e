"""One registry network alone over a folder: `restore method=<network>` (a baseline, fed as its own inference
script feeds it) and the enhancer stage of eval's `DR2+<network>` rows (over DR2's saved outputs, fed as DR2E's
enhancer stage is: bicubic up to the network's size).

The same predict job as restore (`jobs.predict_engine.run_predict`: multi-GPU, resumable, written batch by batch),
fingerprinted by the input file, the network's sha256, its options and the feed; outputs in OUTPUT/restored,
quantised as the scripts' `tensor2img(min_max=(-1, 1))` does (clamp, round to uint8), and a manifest.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch
from omegaconf import DictConfig

from lightning_dr2.config.methods import restorer_choice
from lightning_dr2.datasets.predict_inputs import FEEDS, RestorerInputs
from lightning_dr2.dr2.pipeline import draws_noise, resolve_dtype
from lightning_dr2.exports.restorer import LoadedRestorer, load_restorer
from lightning_dr2.jobs.predict_engine import checked_folders, list_inputs, resolve_accelerator, run_predict
from lightning_dr2.jobs.restore import RestoreSummary
from lightning_dr2.modules.predict import RestorerModule
from lightning_dr2.nets.restorers import RESTORERS

log = logging.getLogger(__name__)


def load_method_network(cfg: Any, network: str, weights_dir: str | None = None) -> LoadedRestorer:
    """Registry network `network` with the file and options the config gives it (`config.methods.restorer_choice`)."""
    choice = restorer_choice(cfg, network)
    loaded = load_restorer(network, choice["weights"], choice["options"], weights_dir)
    assert loaded is not None  # `network` is a registry name, never "none"
    if choice.get("size") is not None and choice["size"] != loaded.size:
        raise ValueError(f"restorers: {network} works at {loaded.size}x{loaded.size}, not size={choice['size']}")
    return loaded


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
) -> RestoreSummary:
    """Run `loaded` alone on `cfg.input` into `cfg.output`. `feed`: how inputs reach the network's size (default:
    its script's, `RestorerSpec.resize`); `rels`: these inputs only (default: the folder's, first `cfg.limit`)."""
    start = time.perf_counter()
    feed = feed or RESTORERS[loaded.name].resize
    if feed not in FEEDS:
        raise ValueError(f"feed must be one of {FEEDS}, got {feed!r}")
    if loaded.size is None:
        raise ValueError(f"network {loaded.name!r} states no size; it cannot be run alone")
    input_dir, output_dir = checked_folders("restore", ("--input", cfg.input), ("--output", cfg.output))
    inputs = list_inputs(input_dir, output_dir, cfg.limit)
    todo_rels = inputs.rels if rels is None else [r for r in rels if r in set(inputs.rels)]
    accelerator = resolve_accelerator(cfg.accelerator)
    dtype = resolve_dtype(cfg.dtype, torch.device("cuda" if accelerator == "gpu" else "cpu"))
    module = RestorerModule(loaded, dtype, channels_last=cfg.channels_last and accelerator == "gpu")
    size = loaded.size
    result = run_predict(
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
    seconds = time.perf_counter() - start
    if result.records is None:
        return RestoreSummary(output_dir, 0, len(result.reused), [], seconds)
    made = result.made()
    log.info("%s: made %d, reused %d -> %s", loaded.name, len(made), len(result.reused), output_dir)
    return RestoreSummary(
        output_dir,
        len(made),
        len(result.reused),
        result.bad,
        seconds,
        recomputed=len(result.recomputed),
        earlier_outputs=inputs.output_folders,
    )
