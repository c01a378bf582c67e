"""Writes restored images as each predict batch finishes, plus a per-rank manifest merged at the end.

An output that is not finite, or constant (one colour), is flagged instead of written: it would otherwise
look finished to the next run.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import BasePredictionWriter

from lightning_dr2.files import atomic_write, write_json, write_table
from lightning_dr2.image_io import output_name, resize, to_uint8_images, write_png
from lightning_dr2.provenance import MANIFEST, merged_records, read_jsonl

log = logging.getLogger(__name__)


def rank_manifests(output_dir: Path) -> list[Path]:
    """Per-rank JSON-lines manifests not merged yet (this run's, or a crashed run's)."""
    return sorted(Path(output_dir).glob("manifest.rank*.jsonl"))


def all_records(output_dir: Path) -> dict[str, dict[str, Any]]:
    """Every record of earlier runs into `output_dir`: the merged manifest, then per-rank lines a crash left."""
    return merged_records(output_dir) | {rec["name"]: rec for rec in read_jsonl(rank_manifests(output_dir))}


class RestoreWriter(BasePredictionWriter):
    """Batch-interval writer: outputs hit the disk as soon as they exist, so a crash loses only the
    batch in flight. Each rank appends to its own `manifest.rank<r>.jsonl` (no cross-process locking);
    `merge_manifests` (rank 0, after predict) folds them into manifest.csv/json and bad_files.txt."""

    def __init__(
        self,
        output_dir: Path,
        input_dir: Path,
        settings: dict[str, Any],
        provenance: dict[str, dict[str, str]],
        save_dr2: bool = True,
        comparison: bool = False,
        final_dir: str = "restored",
    ) -> None:
        super().__init__(write_interval="batch")
        self.output_dir = Path(output_dir)
        self.input_dir = Path(input_dir)
        self.settings = settings
        self.provenance = provenance
        self.save_dr2 = save_dr2
        self.comparison = comparison
        self.final_dir = final_dir  # the final output of `name` is <output_dir>/<final_dir>/<name>.png

    def _rank_file(self, rank: int) -> Path:
        return self.output_dir / f"manifest.rank{rank}.jsonl"

    def write_on_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        prediction: Any,
        batch_indices: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        lines = [json.dumps({"name": rel, "status": "bad", "reason": reason}) for rel, reason in batch["bad"]]
        if prediction["name"]:
            problems = [_problem(out, dr2) for out, dr2 in zip(prediction["output"], prediction["dr2"], strict=True)]
            # Non-finite images are zeroed before quantisation (which refuses NaN); they are never written.
            finals = to_uint8_images(torch.nan_to_num(prediction["output"].float(), 0.0, 0.0, 0.0))
            dr2s = to_uint8_images(torch.nan_to_num(prediction["dr2"].float(), 0.0, 0.0, 0.0)) if self.save_dr2 else []
            size = finals[0].shape[0]
            inputs = to_uint8_images(resize(prediction["lq"].float(), size)) if self.comparison else None
            for i, (rel, seed) in enumerate(zip(prediction["name"], prediction["seed"], strict=True)):
                name = output_name(rel)
                record = {
                    "name": rel,
                    "status": "ok" if problems[i] is None else "flagged",
                    "seed": int(seed),
                    **self.settings,
                    **self.provenance[rel],
                    **batch["shape"][i],
                    "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
                }
                if problems[i] is not None:
                    record["reason"] = problems[i]
                    log.warning("%s: %s; not written", rel, problems[i])
                    lines.append(json.dumps(record))
                    continue
                final = str(Path(self.final_dir) / name)
                record[self.final_dir or "file"] = final
                if self.save_dr2:
                    write_png(self.output_dir / "dr2" / name, dr2s[i])
                    record["dr2"] = f"dr2/{name}"
                if inputs is not None:
                    dr2_up = to_uint8_images(resize(prediction["dr2"][i : i + 1].float(), size))[0]
                    write_png(
                        self.output_dir / "comparison" / name, np.concatenate([inputs[i], dr2_up, finals[i]], axis=1)
                    )
                    record["comparison"] = f"comparison/{name}"
                # The final output last: its presence marks the image as finished for a resume.
                write_png(self.output_dir / final, finals[i])
                lines.append(json.dumps(record))
        if lines:
            with open(self._rank_file(trainer.global_rank), "a") as fh:
                fh.write("\n".join(lines) + "\n")

    def merge_manifests(
        self, clashes: list[tuple[str, str]], current: set[str]
    ) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
        """Fold earlier records, every rank's JSON lines and this run's name clashes into manifest.csv/json.

        Returns (records, problems): problems are this run's unusable inputs and flagged outputs. Records of
        inputs that no longer exist are moved to the manifest's "stale" list (their files are left alone).
        """
        previous = self.output_dir / MANIFEST
        records = merged_records(self.output_dir)
        parts = rank_manifests(self.output_dir)
        new = read_jsonl(parts)
        new += [{"name": rel, "status": "bad", "reason": reason} for rel, reason in clashes]
        records.update({rec["name"]: rec for rec in new})
        problems = [(r["name"], r["reason"]) for r in new if r["status"] != "ok" and r["name"] in current]
        stale = sorted(
            n for n in records if n not in current and not (self.input_dir / records[n].get("source", n)).is_file()
        )
        for name in stale:
            log.warning("%s: its input is gone from %s; listed under 'stale' in the manifest", name, self.input_dir)
        ordered = [records[k] for k in sorted(records) if k not in stale]
        write_json(
            previous,
            {"settings": self.settings, "input": str(self.input_dir), "images": ordered, "stale": stale},
        )
        write_table(self.output_dir / "manifest.csv", [r for r in ordered if r["status"] == "ok"])
        unusable = [r for r in ordered if r["status"] != "ok"]
        if unusable:
            text = "".join(f"{r['name']}\t{r['status']}\t{r['reason']}\n" for r in unusable)
            atomic_write(self.output_dir / "bad_files.txt", text)
        else:
            (self.output_dir / "bad_files.txt").unlink(missing_ok=True)
        for part in parts:
            part.unlink()
        return ordered, problems


def _problem(output: torch.Tensor, dr2: torch.Tensor) -> str | None:
    """Why an output must not count as restored: non-finite values, or one constant colour."""
    if not bool(torch.isfinite(output).all()) or not bool(torch.isfinite(dr2).all()):
        return "non-finite output (NaN/Inf): check the weights and the DR2 settings"
    if float(output.float().amax() - output.float().amin()) == 0.0:
        return "constant output (a single colour): check the weights and the DR2 settings"
    return None
