"""The predict pass restore, dr2-cache and eval share: plan (reuse an output only when its fingerprint says the
current inputs, weights and settings made it), predict the rest on every device (sharded without padding,
written batch by batch, atomically), merge the per-rank manifests on rank 0.
"""

from __future__ import annotations

import logging
import re
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
from lightning_dr2.image_io import IMAGE_EXTENSIONS, not_an_image_reason, output_name, walk_folder
from lightning_dr2.outputs import check_output_location, claim_output
from lightning_dr2.provenance import MANIFEST, REUSE_MODES, ReuseRefused, changed_keys, fingerprint, read_manifest
from lightning_dr2.runinfo import record_run_info
from lightning_dr2.weights import sha256sum

log = logging.getLogger(__name__)


def resolve_accelerator(name: str) -> str:
    """`auto` -> "gpu" when CUDA is available, else "cpu" (decided here: the pipeline's dtype follows it)."""
    return name if name != "auto" else ("gpu" if torch.cuda.is_available() else "cpu")


# Folders a predict job writes in its output folder: the final outputs, DR2's, the comparisons, extra samples.
OUTPUT_SUBFOLDERS = re.compile(r"restored|dr2|dr2_s\d+|comparison")


@dataclass
class Inputs:
    """What a predict job found under its input folder."""

    rels: list[str]  # relative input paths to process (sorted; the first `limit`)
    unusable: list[tuple[str, str]]  # (rel, reason): name clashes and files that are not images, counted and listed
    output_folders: list[Path]  # folders holding an earlier job's outputs (their manifest): skipped, said so


def list_inputs(input_dir: Path, output_dir: Path, limit: int = 0) -> Inputs:
    """The inputs of a predict job: images under `input_dir`, never outputs (files under `output_dir` when it
    lies inside the input, and folders holding a restore/dr2-cache manifest: an earlier job's outputs), with
    the files it cannot use listed: inputs whose output name another input already takes (`a.jpg`, `a.png` ->
    `a.png`) and files that are not images (an animated GIF, a text file)."""
    out = output_dir.resolve()
    inside = out.is_relative_to(input_dir.resolve())

    def skip(folder: Path) -> bool:
        return (inside and folder.resolve() == out) or read_manifest(folder) is not None

    listing = walk_folder(input_dir, skip)
    earlier = [f for f in listing.skipped if not (inside and f.resolve() == out)]
    if Path(input_dir) in earlier:
        raise ConfigError(
            f"--input {input_dir} is the output folder of an earlier job ({input_dir / MANIFEST}); to process its "
            f"results again, give the folder of those images (e.g. {input_dir / 'restored'})"
        )
    for folder in earlier:
        log.warning("%s holds an earlier job's outputs (%s): skipped, not taken as inputs", folder, MANIFEST)
    files = listing.images[:limit] if limit else listing.images
    rels, unusable, owner = [], [], {}
    for f in files:
        rel = str(f.relative_to(input_dir))
        name = output_name(rel)
        if name in owner:
            unusable.append((rel, f"its output {name} is already the output of {owner[name]}; rename one of them"))
            continue
        owner[name] = rel
        rels.append(rel)
    unusable += [(str(f.relative_to(input_dir)), not_an_image_reason(f)) for f in listing.others]
    if not rels:
        found = f"{len(unusable)} unusable file(s), e.g. {unusable[0][0]}: {unusable[0][1]}" if unusable else "no files"
        skipped = f"; {len(earlier)} folder(s) of earlier outputs skipped" if earlier else ""
        reads = ", ".join(sorted(IMAGE_EXTENSIONS))
        raise ConfigError(f"no input image under {input_dir} (it reads {reads}): {found}{skipped}")
    return Inputs(rels, unusable, earlier)


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
    """The (input, output) folders of a job, each given as (option, value): the input must be a folder, the
    output a usable location (`outputs.check_output_location`) other than the input and none of the folders the
    job writes in it, claimed by this job (`outputs.claim_output`) so that no second job writes into it."""
    (src_flag, src), (dst_flag, dst) = source, target
    if not src or not dst:
        raise ConfigError(f"{command} needs {src_flag} DIR and {dst_flag} DIR")
    src_dir, dst_dir = Path(src), Path(dst)
    if src_dir.is_file():
        raise ConfigError(f"{src_flag} {src_dir} is a file; give the folder of faces it is in")
    if not src_dir.is_dir():
        raise FileNotFoundError(f"{src_flag} {src_dir} does not exist (it should be a folder of faces)")
    if src_dir.resolve() == dst_dir.resolve():
        raise ConfigError(f"{dst_flag} must differ from {src_flag} ({src_dir}): inputs are never overwritten")
    if src_dir.resolve().is_relative_to(dst_dir.resolve()):
        first = src_dir.resolve().relative_to(dst_dir.resolve()).parts[0]
        if OUTPUT_SUBFOLDERS.fullmatch(first):
            raise ConfigError(
                f"{src_flag} {src_dir} lies in {dst_flag} {dst_dir}/{first}, where {command} writes its outputs: "
                f"they would overwrite the inputs. Choose another {dst_flag}"
            )
    check_output_location(dst_dir, dst_flag)
    claim_output(dst_dir, dst_flag)
    return src_dir, dst_dir


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
    unusable: list[tuple[str, str]],
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
    records, bad = writer.merge_manifests(unusable, current=set(work) | {rel for rel, _ in unusable})
    return PredictResult(todo, reused, recomputed, records, bad)
