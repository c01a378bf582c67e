"""The predict pass restore, dr2-cache and eval share: plan (reuse an output only when its fingerprint says the
current inputs, weights and settings made it), predict the rest on every device (sharded without padding,
written batch by batch, atomically), merge the per-rank manifests on rank 0.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from torch.utils.data import Dataset

from lightning_dr2.callbacks.writer import RestoreWriter, all_records
from lightning_dr2.config.loader import ConfigError, save_config
from lightning_dr2.datasets.datamodule import ShardedData
from lightning_dr2.datasets.predict_inputs import WorkItems, collate
from lightning_dr2.image_io import list_images, output_name
from lightning_dr2.provenance import REUSE_MODES, ReuseRefused, changed_keys, fingerprint
from lightning_dr2.runinfo import record_run_info
from lightning_dr2.weights import sha256sum

log = logging.getLogger(__name__)


def resolve_accelerator(name: str) -> str:
    """`auto` -> "gpu" when CUDA is available, else "cpu" (decided here: the pipeline's dtype follows it)."""
    return name if name != "auto" else ("gpu" if torch.cuda.is_available() else "cpu")


@functools.lru_cache(maxsize=16)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    return sha256sum(path)


def weights_identity(path: Path) -> str:
    """The sha256 recorded in manifests; cached per (file, size, mtime): an eval over many splits reads
    a 400 MB checkpoint's hash once, not once per split."""
    stat = Path(path).stat()
    return _sha256_cached(str(path), stat.st_size, stat.st_mtime_ns)


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
