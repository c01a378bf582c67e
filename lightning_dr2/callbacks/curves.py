"""A loss-curve PNG in the run directory, drawn from the CSV log, so a run can be judged without W&B."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.loggers import CSVLogger

log = logging.getLogger(__name__)


def read_metric(csv_path: Path, key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of one metric column of a Lightning `metrics.csv`, skipping empty cells."""
    steps: list[int] = []
    values: list[float] = []
    with open(csv_path, newline="") as fh:
        for row in csv.DictReader(fh):
            if row.get(key) not in (None, ""):
                steps.append(int(float(row["step"])))
                values.append(float(row[key]))
    return steps, values


class LossCurve(pl.Callback):
    """At the end of training, plot train/loss (and val/loss) against the step."""

    def __init__(self, path: str | Path, keys: tuple[str, ...] = ("train/loss", "val/loss")) -> None:
        self.path = Path(path)
        self.keys = keys

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        csv_logger = next((lg for lg in trainer.loggers if isinstance(lg, CSVLogger)), None)
        if csv_logger is None:
            return
        csv_logger.save()
        metrics = Path(csv_logger.log_dir) / "metrics.csv"
        if metrics.exists():
            self.plot(metrics)

    def plot(self, metrics_csv: Path) -> Path | None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
        drawn = False
        for key in self.keys:
            steps, values = read_metric(metrics_csv, key)
            if steps:
                ax.plot(steps, values, label=key, marker="o" if len(steps) < 20 else None)
                drawn = True
        if not drawn:
            plt.close(fig)
            return None
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("loss")
        ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
        ax.legend()
        fig.tight_layout()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(self.path)
        plt.close(fig)
        log.info("loss curve -> %s", self.path)
        return self.path
