"""Built benchmark test sets (CelebA-Test 4x/8x/16x x mild/medium/severe, WIDER-Critical): layout and reading.

A built set (see `testset_builder.build_testset`, specs in `testset_spec`) is laid out as::

    out/manifest.json            spec, spec hash, versions, per image and split: hashes, seed, params
    out/hq/<relpath>.png         the HQ face resized to `hq_size`, written once
    out/<split>/lq/<relpath>.png the degraded face, one folder per split (x4_mild, ..., x16_severe)

`PairedSplit` reads one split as LQ/HQ pairs, `RealLQSet` a folder of real LQ faces without ground truth,
`list_splits` enumerates a built set's splits, `audit_testset` compares the files on disk with the manifest
(a set's files are its manifest: anything else is stale or foreign and is reported).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from lightning_dr2.datasets.images import scan
from lightning_dr2.image_io import image_to_tensor, list_images, read_image, read_jpeg_gray

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
HQ_DIR = "hq"
LQ_DIR = "lq"


# ------------------------------------------------------------------------------------------ reading


def read_manifest(out: Path) -> dict | None:
    """The manifest of a built set, or None when the folder has none; ValueError when it is not a JSON object."""
    path = out / MANIFEST
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    return data


def list_splits(testset_dir: str | os.PathLike) -> list[str]:
    """Split names of a built set: manifest order first, then any other folder holding an `lq/` folder."""
    root = Path(testset_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"test set folder {root} does not exist or is not a folder")
    on_disk = sorted(d.name for d in root.iterdir() if d.name != HQ_DIR and (d / LQ_DIR).is_dir())
    try:
        ordered = list((read_manifest(root) or {}).get("splits") or {})
    except (OSError, ValueError):
        ordered = []
    return [name for name in ordered if name in on_disk] + [name for name in on_disk if name not in ordered]


def folder_of(root: Path, part: str) -> Path:
    """The folder holding `part`'s images: `hq/` for the ground truth, `<split>/lq/` for a split."""
    return root / HQ_DIR if part == HQ_DIR else root / part / LQ_DIR


def listed_files(manifest: dict) -> dict[str, list[str]]:
    """The relative names a manifest lists per part: {"hq": [...], "<split>": [...]} (sorted)."""
    listed = {HQ_DIR: sorted(manifest.get("images") or {})}
    for name, split in (manifest.get("splits") or {}).items():
        listed[name] = sorted((split or {}).get("images") or {})
    return listed


@dataclass
class SetAudit:
    """Per part ("hq" or a split): files on disk the manifest does not list, and listed files not on disk."""

    unlisted: dict[str, list[str]]
    missing: dict[str, list[str]]

    @property
    def clean(self) -> bool:
        return not any(self.unlisted.values()) and not any(self.missing.values())


def audit_testset(root: Path, manifest: dict) -> SetAudit:
    """Compare a built set's folders with its manifest (image folders only: hq/ and every <split>/lq/)."""
    unlisted, missing = {}, {}
    for part, names in listed_files(manifest).items():
        folder = folder_of(root, part)
        on_disk = {p.relative_to(folder).as_posix() for p in list_images(folder)} if folder.is_dir() else set()
        unlisted[part] = sorted(on_disk - set(names))
        missing[part] = sorted(set(names) - on_disk)
    return SetAudit(unlisted, missing)


def _drop_bad(files: dict[str, list[Path]], check: bool, workers: int) -> dict[str, str]:
    """Decode every file up front (when `check`) and return {name: reason} for the items to skip."""
    if not check:
        return {}
    reasons = scan([p for paths in files.values() for p in paths], workers=workers, progress=False)
    skipped = {}
    for name, paths in files.items():
        bad = [f"{p}: {reasons[str(p)]}" for p in paths if str(p) in reasons]
        if bad:
            skipped[name] = "; ".join(bad)
    return skipped


class PairedSplit(Dataset):
    """One split of a built set as {"lq": (3,H,W) in [-1,1], "hq": (3,H,W), "name": relpath, "index": i}, plus
    "hq_gray" (H,W uint8, `image_io.read_jpeg_gray`) when the ground truth is a JPEG file.

    Pairs are matched by relative path (`<split>/lq/<rel>` with `hq/<rel>`). With `check` (default) every
    file is decoded once here and pairs with a missing or undecodable file are skipped, logged and listed
    in `skipped`, so no metric is silently computed on a substitute image; with `check=False` a file that
    fails later raises `BadImageError` naming it.
    """

    def __init__(self, testset_dir: str | os.PathLike, split: str, check: bool = True, workers: int = 0):
        self.root = Path(testset_dir)
        self.split = split
        if not self.root.is_dir():
            raise FileNotFoundError(f"test set folder {self.root} does not exist or is not a folder")
        lq_dir = self.root / split / LQ_DIR
        if not lq_dir.is_dir():
            raise FileNotFoundError(
                f"test set {self.root} has no split '{split}' (no folder {lq_dir}); "
                f"splits there: {list_splits(self.root)}"
            )
        hq_dir = self.root / HQ_DIR
        self.skipped: dict[str, str] = {}
        pairs: dict[str, list[Path]] = {}
        for lq in list_images(lq_dir):
            rel = lq.relative_to(lq_dir).as_posix()
            hq = hq_dir / rel
            if hq.is_file():
                pairs[rel] = [lq, hq]
            else:
                self.skipped[rel] = f"no HQ file {hq}"
        self.skipped.update(_drop_bad(pairs, check, workers))
        self.pairs = [(rel, lq, hq) for rel, (lq, hq) in pairs.items() if rel not in self.skipped]
        total = len(self.pairs) + len(self.skipped)
        if self.skipped:
            log.warning(
                "%s: skipped %d of %d LQ/HQ pairs (missing or bad files): %s",
                lq_dir,
                len(self.skipped),
                total,
                "; ".join(f"{k}: {v}" for k, v in list(self.skipped.items())[:5]),
            )
        if not self.pairs:
            raise ValueError(f"no readable LQ/HQ pairs in {lq_dir} ({total} LQ files, all skipped)")

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        rel, lq, hq = self.pairs[index]
        item = {
            "lq": image_to_tensor(read_image(lq)),
            "hq": image_to_tensor(read_image(hq)),
            "name": rel,
            "index": index,
        }
        gray = read_jpeg_gray(hq)
        if gray is not None:  # a JPEG ground truth's own gray, which the identity metric reads (as `eval` does)
            item["hq_gray"] = torch.from_numpy(gray)
        return item


class RealLQSet(Dataset):
    """A folder of real LQ faces without ground truth (WIDER-Critical, ...) as {"lq", "name", "index"}.

    Same skip rules as `PairedSplit`: undecodable files are found up front (when `check`), logged, listed
    in `skipped` and left out.
    """

    def __init__(self, folder: str | os.PathLike, check: bool = True, workers: int = 0):
        self.root = Path(folder)
        files = {p.relative_to(self.root).as_posix(): [p] for p in list_images(self.root)}
        self.skipped = _drop_bad(files, check, workers)
        self.files = [(rel, paths[0]) for rel, paths in files.items() if rel not in self.skipped]
        if self.skipped:
            log.warning(
                "%s: skipped %d of %d bad LQ image(s): %s",
                self.root,
                len(self.skipped),
                len(files),
                "; ".join(list(self.skipped.values())[:5]),
            )
        if not self.files:
            raise ValueError(f"no readable images in {self.root} ({len(files)} files, all bad)")

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Any]:
        rel, path = self.files[index]
        return {"lq": image_to_tensor(read_image(path)), "name": rel, "index": index}
