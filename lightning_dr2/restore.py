"""`python -m lightning_dr2 restore --input DIR --output DIR dr2.N=8 dr2.tau=35 ...`

Restores every face under `--input` (recursively) with DR2 + enhancer and mirrors the input tree:
  OUTPUT/restored/<rel>.png     final output (enhancer size)
  OUTPUT/dr2/<rel>.png          DR2 intermediate x0_hat (UNet size), unless save_dr2=false
  OUTPUT/comparison/<rel>.png   input | DR2 | output, with comparison=true
  OUTPUT/manifest.csv, .json    per image: N, tau, omega, seed, weights hashes, paths
  OUTPUT/bad_files.txt          inputs that could not be decoded, with the reason
Runs through Lightning `Trainer.predict` (any number of GPUs); each image is processed exactly once
(sharded without padding), files are written atomically, and a rerun skips finished images.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from torch.utils.data import Dataset

from lightning_dr2.callbacks.writer import RestoreWriter, output_name
from lightning_dr2.config import ConfigError, save_config
from lightning_dr2.datasets.datamodule import ShardedData
from lightning_dr2.datasets.images import list_images
from lightning_dr2.dr2.pipeline import (
    DEFAULT_ENHANCER_FILE,
    DEFAULT_UNET_FILE,
    DR2E,
    RANDOM,
    image_seed,
    locate_weights,
)
from lightning_dr2.io import BadImageError, image_to_tensor, read_image, resize
from lightning_dr2.modules.restorer import RestoreModule
from lightning_dr2.weights import sha256sum

log = logging.getLogger(__name__)


def resolve_accelerator(name: str) -> str:
    """`auto` -> "gpu" when CUDA is available, else "cpu" (decided here: the pipeline's dtype follows it)."""
    return name if name != "auto" else ("gpu" if torch.cuda.is_available() else "cpu")


class RestoreInputs(Dataset):
    """Input faces resized to the UNet size, with their relative name and seed; bad files become None."""

    def __init__(self, root: Path, rels: list[str], image_size: int, seed: int) -> None:
        self.root, self.rels, self.image_size, self.seed = root, rels, image_size, seed

    def __len__(self) -> int:
        return len(self.rels)

    def __getitem__(self, index: int) -> dict[str, Any]:
        rel = self.rels[index]
        try:
            arr = read_image(self.root / rel)
        except BadImageError as err:
            return {"bad": rel, "reason": err.reason}
        lq = resize(image_to_tensor(arr)[None], self.image_size).clamp(-1, 1)[0]
        return {"lq": lq, "name": rel, "seed": image_seed(self.seed, rel)}


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    good = [it for it in items if "lq" in it]
    return {
        "lq": torch.stack([it["lq"] for it in good]) if good else torch.empty(0),
        "name": [it["name"] for it in good],
        "seed": [it["seed"] for it in good],
        "bad": [(it["bad"], it["reason"]) for it in items if "bad" in it],
    }


@functools.lru_cache(maxsize=16)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    return sha256sum(path)


def weights_identity(path: Path) -> str:
    """The sha256 recorded in manifests; cached per (file, size, mtime): an eval over many splits reads
    a 400 MB checkpoint's hash once, not once per split."""
    stat = Path(path).stat()
    return _sha256_cached(str(path), stat.st_size, stat.st_mtime_ns)


@dataclass
class RestoreSummary:
    """What one `run_restore` did (the CLI prints it)."""

    output: Path
    restored: int
    skipped: int
    bad: list[tuple[str, str]]
    seconds: float


def pending_inputs(input_dir: Path, output_dir: Path, limit: int = 0) -> tuple[list[str], int]:
    """Relative paths still to restore, and how many already have a final output (resume)."""
    files = list_images(input_dir)
    if limit:
        files = files[:limit]
    rels = [str(f.relative_to(input_dir)) for f in files]
    done = [r for r in rels if (output_dir / "restored" / output_name(r)).is_file()]
    finished = set(done)
    return [r for r in rels if r not in finished], len(done)


def run_restore(cfg: DictConfig, weights_dir: str | None = None) -> RestoreSummary:
    start = time.perf_counter()
    if not cfg.input or not cfg.output:
        raise ConfigError("restore needs --input DIR and --output DIR")
    input_dir, output_dir = Path(cfg.input), Path(cfg.output)
    if not input_dir.is_dir():
        raise FileNotFoundError(f"input folder {input_dir} does not exist")
    if input_dir.resolve() == output_dir.resolve():
        raise ConfigError(f"--output must differ from --input ({input_dir}): inputs are never overwritten")
    todo, skipped = pending_inputs(input_dir, output_dir, cfg.limit)
    output_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, output_dir / "restore_config.yaml")
    log.info("%d images to restore, %d already done in %s", len(todo), skipped, output_dir)

    accelerator = resolve_accelerator(cfg.accelerator)
    pipe = DR2E.from_config(cfg, device="cpu", weights_dir=weights_dir)
    unet_id, enhancer_id = _weights_ids(cfg, pipe, weights_dir)
    settings = {
        "N": cfg.dr2.N,
        "tau": cfg.dr2.tau,
        "omega": pipe.omega_value,
        "respacing": cfg.dr2.respacing,
        "sampler": cfg.dr2.sampler,
        "enhancer": cfg.enhancer.name,
        "unet_sha256": unet_id,
        "enhancer_sha256": enhancer_id,
    }
    writer = RestoreWriter(output_dir, input_dir, settings, save_dr2=cfg.save_dr2, comparison=cfg.comparison)
    if todo:
        module = RestoreModule(pipe, compile=cfg.compile, channels_last=cfg.channels_last and accelerator == "gpu")
        dataset = RestoreInputs(input_dir, todo, pipe.image_size, cfg.seed)
        data = ShardedData(dataset, cfg.batch_size, cfg.num_workers, collate_fn=collate)
        trainer = pl.Trainer(
            accelerator=accelerator,
            devices=cfg.devices,
            strategy=cfg.strategy,
            logger=False,
            callbacks=[writer],
            enable_progress_bar=cfg.progress_bar,
            use_distributed_sampler=False,
            enable_model_summary=False,
        )
        trainer.predict(module, datamodule=data, return_predictions=False)
        if not trainer.is_global_zero:
            return RestoreSummary(output_dir, 0, skipped, [], time.perf_counter() - start)
    records, bad = writer.merge_manifests()
    summary = RestoreSummary(output_dir, len(todo) - len(bad), skipped, bad, time.perf_counter() - start)
    log.info("restored %d, skipped %d finished, %d bad -> %s", summary.restored, skipped, len(bad), output_dir)
    return summary


def _weights_ids(cfg: DictConfig, pipe: DR2E, weights_dir: str | None) -> tuple[str, str]:
    """sha256 of the UNet and enhancer files actually used ("random" / "none" when no file)."""
    unet = (
        RANDOM
        if cfg.unet_weights == RANDOM
        else weights_identity(locate_weights(cfg.unet_weights, DEFAULT_UNET_FILE, weights_dir))
    )
    if pipe.enhancer is None:
        return unet, "none"
    if cfg.enhancer.weights == RANDOM:
        return unet, RANDOM
    return unet, weights_identity(locate_weights(cfg.enhancer.weights, DEFAULT_ENHANCER_FILE, weights_dir))
