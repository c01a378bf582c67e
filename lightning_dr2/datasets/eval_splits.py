"""The one enumeration of an eval set's splits, shared by the `eval` job and the training evaluator.

A set spec (`EvalSetConfig` or a plain mapping: name, root, kind, splits, limit, fid_reference) names a built
paired set (`<root>/<split>/lq` with `<root>/hq`, see `testsets`) or a folder of real LQ faces (one split,
`all`, no ground truth).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightning_dr2.config import ConfigError

REAL_SPLIT = "all"


@dataclass(frozen=True)
class EvalSplit:
    """One split to evaluate: its LQ folder and, for paired sets, the HQ (ground truth) folder."""

    set: str
    name: str
    root: Path
    lq_dir: Path
    hq_dir: Path | None
    limit: int
    fid_reference: str | None

    @property
    def paired(self) -> bool:
        return self.hq_dir is not None


def eval_splits(spec: Mapping[str, Any]) -> list[EvalSplit]:
    """Every split of one set spec, in the set's order (or the order `splits` lists them)."""
    from lightning_dr2.datasets.testsets import HQ_DIR, LQ_DIR, list_splits

    name, root = str(spec["name"]), Path(spec["root"])
    if not root.is_dir():
        raise FileNotFoundError(
            f"eval set '{name}': folder {root} does not exist. Build it with "
            f"`python -m lightning_dr2 testset --hq <CelebA-HQ test images> --out {root} "
            "--spec experiments/testsets/celeba_test.yaml`, or point sets[].root at it."
        )
    kind = spec.get("kind") or "paired"
    limit = int(spec.get("limit") or 0)
    reference = spec.get("fid_reference")
    if kind == "real":
        return [EvalSplit(name, REAL_SPLIT, root, root, None, limit, reference)]
    if kind != "paired":
        raise ConfigError(f"eval set '{name}': kind must be 'paired' or 'real', got '{kind}'")
    available = list_splits(root)
    names = list(spec.get("splits") or []) or available
    missing = [s for s in names if s not in available]
    if missing:
        raise ConfigError(f"eval set '{name}' ({root}) has no splits {missing}; it has {available}")
    return [EvalSplit(name, s, root, root / s / LQ_DIR, root / HQ_DIR, limit, reference) for s in names]
