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

import functools
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import Dataset

from lightning_dr2.callbacks.writer import RestoreWriter, all_records
from lightning_dr2.config.loader import ConfigError, save_config
from lightning_dr2.datasets.datamodule import ShardedData
from lightning_dr2.datasets.images import list_images
from lightning_dr2.dr2.pipeline import (
    DEFAULT_UNET_FILE,
    DR2E,
    RANDOM,
    image_seed,
    locate_weights,
)
from lightning_dr2.io import (
    SQUARE_POLICIES,
    BadImageError,
    fit_square,
    image_to_tensor,
    output_name,
    read_image,
    resize,
)
from lightning_dr2.modules.restorer import RestoreModule
from lightning_dr2.nets.restorers import RESTORERS
from lightning_dr2.provenance import REUSE_MODES, ReuseRefused, changed_keys, fingerprint
from lightning_dr2.runinfo import record_run_info
from lightning_dr2.weights import sha256sum

log = logging.getLogger(__name__)


def resolve_accelerator(name: str) -> str:
    """`auto` -> "gpu" when CUDA is available, else "cpu" (decided here: the pipeline's dtype follows it)."""
    return name if name != "auto" else ("gpu" if torch.cuda.is_available() else "cpu")


TINY_INPUT = 32  # inputs below this many pixels a side are upscaled > 8x to the UNet size: warned about


class RestoreInputs(Dataset):
    """Input faces made square (`input_policy`) and resized to the UNet size, with name, seed and how they
    were reshaped; undecodable files become {"bad": ...}."""

    def __init__(self, root: Path, rels: list[str], image_size: int, seed: int, policy: str) -> None:
        self.root, self.rels, self.image_size, self.seed, self.policy = root, rels, image_size, seed, policy

    def __len__(self) -> int:
        return len(self.rels)

    def __getitem__(self, index: int) -> dict[str, Any]:
        rel = self.rels[index]
        item = self.load(rel)
        return item if "bad" in item else {**item, "name": rel, "seed": image_seed(self.seed, rel)}

    def load(self, rel: str) -> dict[str, Any]:
        """{"lq", "shape"} of the input file `rel`, or {"bad", "reason"} when it cannot be decoded."""
        try:
            arr = read_image(self.root / rel)
        except BadImageError as err:
            return {"bad": rel, "reason": err.reason}
        h, w = arr.shape[:2]
        square = fit_square(image_to_tensor(arr), self.policy)
        lq = resize(square[None], self.image_size).clamp(-1, 1)[0]
        shape = {"input_size": [h, w], "reshaped": self.policy if h != w else "none"}
        return {"lq": lq, "shape": shape}


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    good = [it for it in items if "lq" in it]
    return {
        "lq": torch.stack([it["lq"] for it in good]) if good else torch.empty(0),
        "name": [it["name"] for it in good],
        "seed": [it["seed"] for it in good],
        "shape": [it["shape"] for it in good],
        "setting": [it.get("setting") for it in good],  # per-item (N, tau, omega) of a DR2 cache; None in restore
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
    skipped: int  # finished earlier with the same fingerprint: reused
    bad: list[tuple[str, str]]  # inputs that could not be used, and outputs flagged (non-finite, constant)
    seconds: float
    recomputed: int = 0  # finished earlier with other inputs/weights/settings: made again
    reshaped: int = 0  # non-square inputs made square by `input_policy`
    tiny: int = 0  # inputs smaller than TINY_INPUT pixels a side


def list_inputs(input_dir: Path, output_dir: Path, limit: int = 0) -> tuple[list[str], list[tuple[str, str]]]:
    """Relative input paths (sorted; the first `limit`), never files under `output_dir` (outputs never become
    inputs), and inputs whose output name another input already takes (`a.jpg`, `a.png` -> `a.png`)."""
    out = output_dir.resolve()
    files = [f for f in list_images(input_dir) if not f.resolve().is_relative_to(out)]
    if limit:
        files = files[:limit]
    rels, clashes, owner = [], [], {}
    for f in files:
        rel = str(f.relative_to(input_dir))
        name = output_name(rel)
        if name in owner:
            clashes.append((rel, f"its output {name} is already the output of {owner[name]}; rename one of them"))
            continue
        owner[name] = rel
        rels.append(rel)
    return rels, clashes


WorkItems = dict[str, tuple[str, dict[str, Any]]]  # output name -> (input file, settings of this output alone)


def plan_restore(
    input_dir: Path,
    output_dir: Path,
    work: WorkItems,
    settings: dict[str, Any],
    reuse: str,
    final_dir: str = "restored",
) -> tuple[list[str], list[str], list[str], dict[str, dict[str, Any]]]:
    """(todo, reused, recomputed, provenance) over the work items (restore: each input file once, named by
    itself). An output is reused only when its recorded fingerprint is the current one; `reuse=strict`
    refuses to recompute a finished output and names what changed."""
    if reuse not in REUSE_MODES:
        raise ConfigError(f"reuse must be one of {REUSE_MODES}, got {reuse!r}")
    previous = all_records(output_dir)
    hashes: dict[str, str] = {}
    todo, reused, recomputed, provenance = [], [], [], {}
    for name, (source, own) in work.items():
        if source not in hashes:
            hashes[source] = sha256sum(input_dir / source)
        fields = {**settings, **own, "input_sha256": hashes[source]}
        provenance[name] = {**own, "input_sha256": hashes[source], "fingerprint": fingerprint(fields)}
        final = output_dir / final_dir / output_name(name)
        if not final.is_file():
            todo.append(name)
            continue
        record = previous.get(name, {})
        if record.get("status") == "ok" and record.get("fingerprint") == provenance[name]["fingerprint"]:
            reused.append(name)
            continue
        if reuse == "strict":
            changed = changed_keys(record, fields) if record else ["(no record)"]
            raise ReuseRefused(
                f"reuse=strict: {final} was made with other settings "
                f"(changed: {', '.join(changed)}); use another --output, or reuse=auto to recompute it"
            )
        todo.append(name)
        recomputed.append(name)
    return todo, reused, recomputed, provenance


def checked_folders(command: str, source: tuple[str, str | None], target: tuple[str, str | None]) -> tuple[Path, Path]:
    """The (input, output) folders of a job, each given as (option, value): the input must exist, the output
    be a writable folder other than it (see `check_output_dir`)."""
    (src_flag, src), (dst_flag, dst) = source, target
    if not src or not dst:
        raise ConfigError(f"{command} needs {src_flag} DIR and {dst_flag} DIR")
    src_dir, dst_dir = Path(src), Path(dst)
    if not src_dir.is_dir():
        raise FileNotFoundError(f"{src_flag} {src_dir} does not exist (it should be a folder of faces)")
    check_output_dir(dst_dir, src_dir)
    return src_dir, dst_dir


def check_output_dir(output_dir: Path, input_dir: Path) -> None:
    """The output folder must be a writable folder other than the input; say which and why if not."""
    if input_dir.resolve() == output_dir.resolve():
        raise ConfigError(f"--output must differ from --input ({input_dir}): inputs are never overwritten")
    if output_dir.exists() and not output_dir.is_dir():
        raise ConfigError(f"--output {output_dir} is a file, not a folder: choose a folder path")
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        probe = output_dir / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise ConfigError(f"--output {output_dir} is not writable ({err.strerror}): choose a writable folder") from err


def restore_settings(cfg: DictConfig, pipe: DR2E, weights_dir: str | None) -> dict[str, Any]:
    """Everything besides the input file that determines an output: recorded per image, fingerprinted."""
    unet_id, enhancer_id = _weights_ids(cfg, pipe, weights_dir)
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
        "enhancer": cfg.enhancer.name,
        "enhancer_size": cfg.enhancer.size,
        "enhancer_options": OmegaConf.to_container(cfg.enhancer.options, resolve=True),
        "unet_sha256": unet_id,
        "enhancer_sha256": enhancer_id,
        "dtype": cfg.dtype,
        "input_policy": cfg.input_policy,
    }


@dataclass
class PredictResult:
    """What `run_predict` did; `records` is None on ranks other than 0 (they do not merge manifests)."""

    todo: list[str]
    reused: list[str]
    recomputed: list[str]
    records: list[dict[str, Any]] | None
    bad: list[tuple[str, str]]

    def made(self) -> list[dict[str, Any]]:
        """The records of the outputs this job wrote (computed now, not reused or flagged); empty off rank 0."""
        todo = set(self.todo)
        return [r for r in self.records or [] if r["name"] in todo and r["status"] == "ok"]


def run_predict(
    cfg: DictConfig,
    input_dir: Path,
    output_dir: Path,
    work: WorkItems,
    clashes: list[tuple[str, str]],
    settings: dict[str, Any],
    module: pl.LightningModule,
    dataset_of: Callable[[list[str]], Dataset],
    config_file: str,
    final_dir: str = "restored",
    **writer_options: Any,
) -> PredictResult:
    """The job restore and the DR2 cache share: plan (reuse by fingerprint), predict the rest on every
    device (sharded without padding, written batch by batch), merge the per-rank manifests on rank 0."""
    todo, reused, recomputed, provenance = plan_restore(input_dir, output_dir, work, settings, cfg.reuse, final_dir)
    save_config(cfg, output_dir / config_file)
    record_run_info(output_dir)
    log.info(
        "%d outputs to make (%d made earlier with other settings), %d reused in %s",
        len(todo),
        len(recomputed),
        len(reused),
        output_dir,
    )
    writer = RestoreWriter(output_dir, input_dir, settings, provenance, final_dir=final_dir, **writer_options)
    if todo:
        data = ShardedData(dataset_of(todo), cfg.batch_size, cfg.num_workers, collate_fn=collate)
        trainer = pl.Trainer(
            accelerator=resolve_accelerator(cfg.accelerator),
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
            return PredictResult(todo, reused, recomputed, None, [])
    records, bad = writer.merge_manifests(clashes, current=set(work) | {rel for rel, _ in clashes})
    return PredictResult(todo, reused, recomputed, records, bad)


def run_restore(cfg: DictConfig, weights_dir: str | None = None) -> RestoreSummary:
    start = time.perf_counter()
    if cfg.input_policy not in SQUARE_POLICIES:
        raise ConfigError(f"input_policy must be one of {SQUARE_POLICIES}, got {cfg.input_policy!r}")
    input_dir, output_dir = checked_folders("restore", ("--input", cfg.input), ("--output", cfg.output))
    rels, clashes = list_inputs(input_dir, output_dir, cfg.limit)

    accelerator = resolve_accelerator(cfg.accelerator)
    pipe = DR2E.from_config(cfg, device="cpu", weights_dir=weights_dir)
    module = RestoreModule(pipe, compile=cfg.compile, channels_last=cfg.channels_last and accelerator == "gpu")
    result = run_predict(
        cfg,
        input_dir,
        output_dir,
        {rel: (rel, {}) for rel in rels},
        clashes,
        restore_settings(cfg, pipe, weights_dir),
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
    )
    log.info("restored %d, reused %d, %d bad or flagged -> %s", len(made), summary.skipped, len(result.bad), output_dir)
    return summary


def unet_identity(weights: str | None, weights_dir: str | None = None) -> str:
    """The sha256 manifests record for a UNet given as file, registry name or None (DR2_FFHQ.pkl); "random"."""
    return RANDOM if weights == RANDOM else weights_identity(locate_weights(weights, DEFAULT_UNET_FILE, weights_dir))


def _weights_ids(cfg: DictConfig, pipe: DR2E, weights_dir: str | None) -> tuple[str, str]:
    """sha256 of the UNet and enhancer files actually used ("random" / "none" when no file)."""
    unet = unet_identity(cfg.unet_weights, weights_dir)
    if pipe.enhancer is None:
        return unet, "none"
    if cfg.enhancer.weights == RANDOM:
        return unet, RANDOM
    return unet, weights_identity(
        locate_weights(cfg.enhancer.weights, RESTORERS[cfg.enhancer.name].weights, weights_dir)
    )
