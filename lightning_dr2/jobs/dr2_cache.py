"""`python -m lightning_dr2 dr2-cache --hq DIR --out DIR`: DR2 outputs of a face folder, for enhancer training.

Runs the DR2 sampler (no enhancer) over every face under `--hq` at the UNet's size and writes
  OUT/dr2/<rel>.png        sample 0 of each face: exactly what the enhancer data's folder mode reads
                           (`data.mode=folder data.dr2_root=OUT/dr2`)
  OUT/dr2_s<k>/<rel>.png   sample k (k < samples_per_image), another seed and another drawn (N, tau): each
                           folder is a complete `data.dr2_root` of its own
  OUT/manifest.csv, .json  per output: source file and its sha256, N, tau, omega, seed, UNet sha256,
                           diffusion config, fingerprint
Each output draws its (N, tau, omega) from `settings` with its own seed (derived from the run seed, the
face's path and k), so the cache depends on neither file order, batches nor GPU count. Planning, reuse by
fingerprint, sharded `Trainer.predict`, atomic batch-by-batch writes and manifests are the restore job's
(`restore.run_predict`).
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from lightning_dr2.datasets.predict_inputs import CacheInputs, WorkItems
from lightning_dr2.diffusion.noise import image_seed
from lightning_dr2.dr2.pipeline import DR2E
from lightning_dr2.jobs.predict_engine import checked_folders, list_inputs, resolve_accelerator, run_predict
from lightning_dr2.jobs.restore import restore_settings
from lightning_dr2.modules.predict import CacheModule

log = logging.getLogger(__name__)

SAMPLE_DIR = "dr2"  # sample 0; sample k > 0 goes to f"{SAMPLE_DIR}_s{k}"


def sample_dir(k: int) -> str:
    return SAMPLE_DIR if k == 0 else f"{SAMPLE_DIR}_s{k}"


def work_items(rels: list[str], settings: list[tuple[int, int, int]], samples: int, base_seed: int) -> WorkItems:
    """Output name `<sample dir>/<rel>` -> (rel, its seed, sample index and (N, tau, omega) drawn by that seed)."""
    work: WorkItems = {}
    for k in range(samples):
        for rel in rels:
            seed = image_seed(base_seed, rel if k == 0 else f"{rel}#s{k}")
            n, tau, omega = settings[int(np.random.default_rng(seed).integers(len(settings)))]
            own = {"source": rel, "sample": k, "seed": seed, "N": n, "tau": tau, "omega": omega}
            work[f"{sample_dir(k)}/{rel}"] = (rel, own)
    return work


@dataclass
class CacheSummary:
    """What one `run_cache` did (the CLI prints it)."""

    output: Path
    made: int
    reused: int
    recomputed: int
    bad: list[tuple[str, str]]
    seconds: float  # the whole job (planning, hashing, loading and DR2)
    earlier_outputs: list[Path] = field(default_factory=list)  # folders of an earlier job's outputs: skipped

    @property
    def images_per_second(self) -> float:
        return self.made / self.seconds if self.seconds > 0 else 0.0


def cache_settings(cfg: DictConfig, pipe: DR2E) -> list[tuple[int, int, int]]:
    """The recipe's (N, tau, omega) list with omega resolved, each checked against the UNet's size."""
    return [(int(s.N), int(s.tau), pipe.dr2.check_setting(s.N, s.tau, s.omega, pipe.image_size)) for s in cfg.settings]


def run_cache(cfg: DictConfig, weights_dir: str | None = None) -> CacheSummary:
    start = time.perf_counter()
    hq, out = checked_folders("dr2-cache", ("--hq", cfg.hq), ("--out", cfg.out))
    inputs = list_inputs(hq, out, cfg.limit)

    accelerator = resolve_accelerator(cfg.accelerator)
    first = cfg.settings[0]
    built = copy.deepcopy(cfg)
    built.dr2.N, built.dr2.tau, built.dr2.omega = first.N, first.tau, first.omega  # the pipe's own are unused
    pipe = DR2E.from_config(built, device="cpu", weights_dir=weights_dir)
    settings = cache_settings(cfg, pipe)
    # Per-output N/tau/omega live in each record; the run's list is part of every fingerprint (the draw uses it).
    shared = {k: v for k, v in restore_settings(cfg, pipe).items() if k not in ("N", "tau", "omega")}
    shared["settings"] = [list(s) for s in settings]
    work = work_items(inputs.rels, settings, cfg.samples_per_image, cfg.seed)
    module = CacheModule(pipe, compile=cfg.compile, channels_last=cfg.channels_last and accelerator == "gpu")
    result = run_predict(
        cfg,
        hq,
        out,
        work,
        inputs.unusable,
        shared,
        module,
        lambda todo: CacheInputs(hq, todo, work, pipe.image_size, cfg.input_policy),
        "dr2_cache_config.yaml",
        final_dir="",
        save_dr2=False,
    )
    made = len(result.made())
    seconds = time.perf_counter() - start
    summary = CacheSummary(
        out, made, len(result.reused), len(result.recomputed), result.bad, seconds, inputs.output_folders
    )
    if result.records is not None:
        log.info(
            "DR2 cache: made %d, reused %d, %d bad or flagged, %.2f images/s -> %s (settings %s)",
            made,
            summary.reused,
            len(summary.bad),
            summary.images_per_second,
            out,
            OmegaConf.to_container(cfg.settings),
        )
    return summary
