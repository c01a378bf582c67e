"""The one enumeration of an eval set's splits, shared by the `eval` job and the training evaluator.

A set spec (`EvalSetConfig` or a plain mapping: name, root, kind, splits, limit, fid_reference) names a built
paired set (`<root>/<split>/lq` with `<root>/hq`, see `testsets`) or a folder of real LQ faces (one split,
`all`, no ground truth).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightning_dr2.config.loader import ConfigError

log = logging.getLogger(__name__)

REAL_SPLIT = "all"


@dataclass(frozen=True)
class EvalSplit:
    """One split to evaluate: its LQ folder and, for paired sets, the HQ (ground truth) folder. `listed`: the
    LQ names the set's manifest lists (None without a manifest: the folder's files); `present`: False for a
    split the set lists (or the config names) that is not on disk, kept only with allow_missing."""

    set: str
    name: str
    root: Path
    lq_dir: Path
    hq_dir: Path | None
    limit: int
    fid_reference: str | None
    listed: tuple[str, ...] | None = None
    present: bool = True

    @property
    def paired(self) -> bool:
        return self.hq_dir is not None


@dataclass
class SplitFiles:
    """The images of one split that are scored, and what the split should hold but does not (or holds but
    should not): `missing` are listed LQ or ground-truth files absent from disk, `unlisted` LQ files on disk
    that the set's manifest does not list (never scored)."""

    rels: list[str]
    missing: list[str]
    unlisted: list[str]
    input_limit: int  # how many of the LQ folder's sorted files a restore job takes to cover `rels` (0 = all)


def eval_splits(spec: Mapping[str, Any], allow_missing: bool = False) -> list[EvalSplit]:
    """Every split of one set spec, in the set's order (or the order `splits` lists them). A split the
    manifest lists or the config names that is not on disk is an error, or with `allow_missing` an
    `EvalSplit(present=False)` the caller counts."""
    from lightning_dr2.datasets.testsets import HQ_DIR, LQ_DIR, list_splits, listed_files, read_manifest

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
    manifest = read_manifest(root)
    listed = {k: tuple(v) for k, v in listed_files(manifest).items() if k != HQ_DIR} if manifest else {}
    on_disk = list_splits(root)
    unlisted = [s for s in on_disk if manifest is not None and s not in listed]
    if unlisted:
        log.warning("eval set '%s' (%s): split folders %s are not in its manifest; not evaluated", name, root, unlisted)
    available = list(listed) if manifest is not None else on_disk
    names = list(spec.get("splits") or []) or available
    missing = [s for s in names if s not in on_disk or (manifest is not None and s not in listed)]
    if missing and not allow_missing:
        raise ConfigError(
            f"eval set '{name}' ({root}) has no splits {missing} on disk or in its manifest; it has "
            f"{[s for s in available if s in on_disk]}. Rebuild the set, fix sets[].splits, or set "
            "allow_missing=true to evaluate the rest and count the missing ones"
        )
    return [
        EvalSplit(name, s, root, root / s / LQ_DIR, root / HQ_DIR, limit, reference, listed.get(s), s not in missing)
        for s in names
    ]


def split_files(part: EvalSplit, allow_missing: bool = False) -> SplitFiles:
    """The first `limit` listed images of a split whose LQ (and ground truth) exist. A missing listed file is an
    error naming it, or with `allow_missing` a counted warning; unlisted files are reported and left out."""
    from lightning_dr2.image_io import list_images

    on_disk = [f.relative_to(part.lq_dir).as_posix() for f in list_images(part.lq_dir)] if part.present else []
    listed = list(part.listed) if part.listed is not None else on_disk
    rels = listed[: part.limit] if part.limit else listed
    present = set(on_disk)
    unlisted = sorted(present - set(listed))
    if unlisted:
        log.warning(
            "%s / %s: %d file(s) in %s are not in the set's manifest (stale or foreign), not scored: %s",
            part.set, part.name, len(unlisted), part.lq_dir, unlisted[:5],
        )  # fmt: skip
    missing = {r: part.lq_dir / r for r in rels if r not in present}  # name -> the first file it lacks
    if part.hq_dir is not None:
        missing |= {r: part.hq_dir / r for r in rels if r not in missing and not (part.hq_dir / r).is_file()}
    if missing and not allow_missing:
        raise FileNotFoundError(
            f"eval set '{part.set}', split '{part.name}': {len(missing)} listed image(s) lack a file, e.g. "
            f"{', '.join(map(str, list(missing.values())[:3]))}. Restore them (rebuild the set with `testset`), "
            "or set allow_missing=true to score the rest and count the missing ones in the results"
        )
    if missing:
        log.warning("%s / %s: %d listed image(s) lack a file, not scored (allow_missing=true): %s",
                    part.set, part.name, len(missing), [str(m) for m in list(missing.values())[:5]])  # fmt: skip
    rels = [r for r in rels if r not in missing]
    position = {r: i for i, r in enumerate(on_disk)}
    input_limit = max((position[r] + 1 for r in rels), default=0) if part.limit or unlisted else 0
    return SplitFiles(rels, sorted(missing), unlisted, input_limit)
