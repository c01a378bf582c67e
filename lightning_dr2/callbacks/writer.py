"""Writes restored images as each predict batch finishes, plus a per-rank manifest merged at the end."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
from pytorch_lightning.callbacks import BasePredictionWriter

from lightning_dr2.io import atomic_write, resize, to_uint8_images, write_json, write_png, write_table


def output_name(rel: str) -> str:
    """Outputs are PNG whatever the input format: `a/b.jpg` -> `a/b.png`."""
    return str(Path(rel).with_suffix(".png"))


class RestoreWriter(BasePredictionWriter):
    """Batch-interval writer: outputs hit the disk as soon as they exist, so a crash loses only the
    batch in flight. Each rank appends to its own `manifest.rank<r>.jsonl` (no cross-process locking);
    `merge_manifests` (rank 0, after predict) folds them into manifest.csv/json and bad_files.txt."""

    def __init__(
        self,
        output_dir: Path,
        input_dir: Path,
        settings: dict[str, Any],
        save_dr2: bool = True,
        comparison: bool = False,
    ) -> None:
        super().__init__(write_interval="batch")
        self.output_dir = Path(output_dir)
        self.input_dir = Path(input_dir)
        self.settings = settings
        self.save_dr2 = save_dr2
        self.comparison = comparison

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
            finals = to_uint8_images(prediction["output"])
            dr2s = to_uint8_images(prediction["dr2"])
            size = finals[0].shape[0]
            inputs = to_uint8_images(resize(prediction["lq"].float(), size)) if self.comparison else None
            for i, (rel, seed) in enumerate(zip(prediction["name"], prediction["seed"], strict=True)):
                name = output_name(rel)
                record = {
                    "name": rel,
                    "status": "ok",
                    "seed": int(seed),
                    **self.settings,
                    "restored": f"restored/{name}",
                    "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
                }
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
                write_png(self.output_dir / "restored" / name, finals[i])
                lines.append(json.dumps(record))
        if lines:
            with open(self._rank_file(trainer.global_rank), "a") as fh:
                fh.write("\n".join(lines) + "\n")

    def merge_manifests(self) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
        """Fold every rank's JSON lines (and an earlier run's manifest) into manifest.csv / .json."""
        records: dict[str, dict[str, Any]] = {}
        previous = self.output_dir / "manifest.json"
        if previous.is_file():
            for rec in json.loads(previous.read_text()).get("images", []):
                records[rec["name"]] = rec
        bad_now: list[tuple[str, str]] = []
        for part in sorted(self.output_dir.glob("manifest.rank*.jsonl")):
            for line in part.read_text().splitlines():
                if line.strip():
                    rec = json.loads(line)
                    records[rec["name"]] = rec
                    if rec["status"] == "bad":
                        bad_now.append((rec["name"], rec["reason"]))
            part.unlink()
        ordered = [records[k] for k in sorted(records)]
        good = [r for r in ordered if r["status"] == "ok"]
        bad = [r for r in ordered if r["status"] == "bad"]
        write_json(previous, {"settings": self.settings, "input": str(self.input_dir), "images": ordered})
        write_table(self.output_dir / "manifest.csv", good)
        if bad:
            atomic_write(self.output_dir / "bad_files.txt", "".join(f"{r['name']}\t{r['reason']}\n" for r in bad))
        return ordered, bad_now
