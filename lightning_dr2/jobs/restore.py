"""`python -m lightning_dr2 restore --input DIR --output DIR dr2.N=8 dr2.tau=35 ...`

Restores every face under `--input` (recursively) with DR2 + enhancer and mirrors the input tree:
  OUTPUT/restored/<rel>.png     final output (enhancer size)
  OUTPUT/dr2/<rel>.png          DR2 intermediate x0_hat (UNet size), unless save_dr2=false
  OUTPUT/comparison/<rel>.png   input | DR2 | output, with comparison=true
  OUTPUT/manifest.csv, .json    per image: N, tau, omega, seed, weights and input hashes, fingerprint
  OUTPUT/bad_files.txt          inputs that could not be used (undecodable, name clash), and flagged outputs
Runs through Lightning `Trainer.predict` (any number of GPUs); each image is processed exactly once
(sharded without padding), files are written atomically, and a rerun reuses a finished image only when
its fingerprint (input hash, weights hashes, settings, code version) equals the current one.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from lightning_dr2.config.loader import ConfigError
from lightning_dr2.datasets.predict_inputs import RestoreInputs
from lightning_dr2.dr2.pipeline import DR2E, Networks
from lightning_dr2.image_io import SQUARE_POLICIES
from lightning_dr2.jobs.predict_engine import checked_folders, list_inputs, resolve_accelerator, run_predict
from lightning_dr2.modules.predict import RestoreModule

log = logging.getLogger(__name__)


TINY_INPUT = 32  # inputs below this many pixels a side are upscaled > 8x to the UNet size: warned about


@dataclass
class RestoreSummary:
    """What one `run_restore` did (the CLI prints it)."""

    output: Path
    restored: int
    skipped: int  # finished earlier with the same fingerprint: reused
    bad: list[tuple[str, str]]  # inputs that could not be used, and outputs flagged (non-finite, constant)
    seconds: float
    recomputed: int = 0  # finished earlier with other inputs/weights/settings: made again
    reshaped: int = 0  # non-square inputs made square by `input_policy`
    tiny: int = 0  # inputs smaller than TINY_INPUT pixels a side
    earlier_outputs: list[Path] = field(default_factory=list)  # folders of an earlier job's outputs: skipped


def restore_settings(cfg: DictConfig, pipe: DR2E) -> dict[str, Any]:
    """Everything besides the input file that determines an output: recorded per image, fingerprinted.

    The networks are recorded as loaded (`pipe.loaded_unet`, `pipe.loaded_enhancer`: sha256, the network that
    ran, its options) and the enhancer size as it runs, never re-derived from the settings."""
    unet, enhancer = pipe.loaded_unet, pipe.loaded_enhancer
    if unet is None:
        raise ValueError("restore_settings needs a DR2E built from files (DR2E.from_config / from_networks)")
    return {
        "N": cfg.dr2.N,
        "tau": cfg.dr2.tau,
        "omega": pipe.omega_value,
        "respacing": cfg.dr2.respacing,
        "sampler": cfg.dr2.sampler,
        "eta": cfg.dr2.eta,
        "base_seed": cfg.seed,  # each image's own seed is derived from it and the image name
        "image_size": pipe.image_size,
        "diffusion": pipe.dr2.diffusion_config.to_dict(),  # the process it runs (a sidecar wins over cfg)
        "enhancer": "none" if enhancer is None else enhancer.name,
        "enhancer_size": pipe.enhancer_size,
        "enhancer_options": {} if enhancer is None else enhancer.options,
        "unet_sha256": unet.sha256,
        "enhancer_sha256": "none" if enhancer is None else enhancer.sha256,
        "dtype": cfg.dtype,
        "input_policy": cfg.input_policy,
    }


def run_restore(cfg: DictConfig, weights_dir: str | None = None, networks: Networks | None = None) -> RestoreSummary:
    """Restore `cfg.input` into `cfg.output`; `networks` loaded once by a caller that runs many jobs (eval), else
    loaded from `cfg` here."""
    start = time.perf_counter()
    if cfg.input_policy not in SQUARE_POLICIES:
        raise ConfigError(f"input_policy must be one of {SQUARE_POLICIES}, got {cfg.input_policy!r}")
    input_dir, output_dir = checked_folders("restore", ("--input", cfg.input), ("--output", cfg.output))
    inputs = list_inputs(input_dir, output_dir, cfg.limit)

    accelerator = resolve_accelerator(cfg.accelerator)
    pipe = DR2E.from_config(cfg, device="cpu", weights_dir=weights_dir, networks=networks)
    module = RestoreModule(pipe, compile=cfg.compile, channels_last=cfg.channels_last and accelerator == "gpu")
    result = run_predict(
        cfg,
        input_dir,
        output_dir,
        {rel: (rel, {}) for rel in inputs.rels},
        inputs.unusable,
        restore_settings(cfg, pipe),
        module,
        lambda todo: RestoreInputs(input_dir, todo, pipe.image_size, cfg.seed, cfg.input_policy),
        "restore_config.yaml",
        save_dr2=cfg.save_dr2,
        comparison=cfg.comparison,
    )
    if result.records is None:
        return RestoreSummary(output_dir, 0, len(result.reused), [], time.perf_counter() - start)
    made = result.made()
    reshaped = sum(1 for r in made if r.get("reshaped", "none") != "none")
    tiny = sum(1 for r in made if min(r.get("input_size", [TINY_INPUT])) < TINY_INPUT)
    if reshaped:
        log.warning("%d non-square inputs were made square with input_policy=%s", reshaped, cfg.input_policy)
    if tiny:
        log.warning("%d inputs are smaller than %d px a side (upscaled > 8x): expect little detail", tiny, TINY_INPUT)
    summary = RestoreSummary(
        output_dir,
        len(made),
        len(result.reused),
        result.bad,
        time.perf_counter() - start,
        recomputed=len(result.recomputed),
        reshaped=reshaped,
        tiny=tiny,
        earlier_outputs=inputs.output_folders,
    )
    log.info("restored %d, reused %d, %d bad or flagged -> %s", len(made), summary.skipped, len(result.bad), output_dir)
    return summary
