"""Published numbers (a paper's table) to show beside measured results, clearly marked and never ranked.

A table is a YAML file in `experiments/published/` (or any path): a citation, a note on how comparable its
numbers are to ours, and rows of (method, set, split, metrics). Metric keys are result keys of the metric
catalogue; a number whose protocol we cannot match (e.g. a FID against unstated statistics) gets its own
key (`fid_paper`), so it never shares a column with a measured one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from lightning_dr2.config.loader import EXPERIMENTS_DIR, ConfigError, load_structured, named_yaml
from lightning_dr2.metrics.catalogue import metric_of
from lightning_dr2.report import Row

PUBLISHED_DIR = EXPERIMENTS_DIR / "published"


@dataclass
class PublishedRow:
    method: str = "?"
    set: str = "?"
    split: str = "?"
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class PublishedTable:
    citation: str = "?"
    note: str = ""
    rows: list[PublishedRow] = field(default_factory=list)


def published_path(name_or_path: str | Path) -> Path:
    """`dr2_cvpr2023` (a file in experiments/published/) or a path to a YAML file."""
    return named_yaml(name_or_path, PUBLISHED_DIR, "published table")


def load_published(name_or_path: str | Path) -> tuple[PublishedTable, list[Row]]:
    """The table and its rows as report rows marked `published` (the method is the row's setting)."""
    path = published_path(name_or_path)
    table: PublishedTable = OmegaConf.to_object(load_structured(PublishedTable, path))  # type: ignore[assignment]
    rows = []
    for i, entry in enumerate(table.rows):
        unknown = [key for key in entry.metrics if metric_of(key) is None]
        if unknown:
            raise ConfigError(f"{path}: rows[{i}] has metric keys {unknown} that are not metric result keys")
        rows.append(Row(entry.set, entry.split, entry.method, dict(entry.metrics), published=True))
    return table, rows
