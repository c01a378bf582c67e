"""Other methods' restored images (`eval predictions.<method>=DIR`), matched to the images of an eval split.

Layout: a method's folder mirrors the set, one file per listed image, matched by its relative name without
the extension (`000.png` <- `000.png`, `000.jpg`, ...; any format `list_images` reads):
  paired set (CelebA-Test):  DIR/<split>/<name>        e.g. DIR/x8_medium/000123.png
  real set (WIDER-Critical): DIR/<name>
  several `sets`:            DIR/<set>/<split>/<name>, DIR/<set>/<name>
Sizes follow the rule DR2's own outputs follow: a prediction has its ground truth's size, or both are square
(the scorer resizes the output bicubically to the ground truth's size, as for DR2's 256 px outputs against
512 px faces); without ground truth a prediction must be square (an aligned face). Anything else, a missing
file, a file that matches no listed image, or two files for one image, is an error naming the files; with
`allow_missing` missing and unmatched files are counted (and logged) instead.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from lightning_dr2.datasets.eval_splits import EvalSplit, SplitFiles
from lightning_dr2.image_io import BadImageError, list_images, load_pil

log = logging.getLogger(__name__)

SHOWN = 10  # file names listed in one error message


@dataclass
class Predictions:
    """One method's files for one split: `files` by the split's relative name (scored), `missing` names without
    a file, `unmatched` files that match no image the set lists (never scored)."""

    folder: Path
    files: dict[str, Path]
    missing: list[str]
    unmatched: list[str]


def prediction_folder(root: Path, part: EvalSplit, several_sets: bool) -> Path:
    """Where a method's images of one split live (see the module docstring)."""
    base = root / part.set if several_sets else root
    return base / part.name if part.paired else base


def _stem(rel: str) -> str:
    return PurePosixPath(rel).with_suffix("").as_posix()


def _listing(names: list[str], total: int | None = None) -> str:
    total = len(names) if total is None else total
    more = f" and {total - SHOWN} more" if total > SHOWN else ""
    return ", ".join(names[:SHOWN]) + more


def find_predictions(
    method: str, root: Path, part: EvalSplit, files: SplitFiles, several_sets: bool, allow_missing: bool
) -> Predictions:
    """Match a method's files to the split's scored images (`files.rels`); check their sizes."""
    folder = prediction_folder(root, part, several_sets)
    where = f"predictions.{method}: set '{part.set}', split '{part.name}'"
    expected = folder / (files.rels[0] if files.rels else "<name>.png")
    present = folder.is_dir() and any(folder.iterdir())  # absent or empty: every image is missing, named below
    on_disk = [p.relative_to(folder).as_posix() for p in list_images(folder)] if present else []
    by_stem: dict[str, list[str]] = {}
    for rel in on_disk:
        by_stem.setdefault(_stem(rel), []).append(rel)
    doubles = [" and ".join(found) for found in by_stem.values() if len(found) > 1]
    if doubles:
        raise ValueError(f"{where}: several files for one image in {folder}: {_listing(doubles)}. Keep one of each")
    listed = part.listed
    if listed is None:  # no manifest: the split is its LQ folder
        listed = tuple(f.relative_to(part.lq_dir).as_posix() for f in list_images(part.lq_dir))
    known = {_stem(r) for r in [*listed, *files.missing]}  # every image of the split, not only the `limit` scored
    unmatched = sorted(rel for rel in on_disk if _stem(rel) not in known)
    found = {rel: folder / by_stem[_stem(rel)][0] for rel in files.rels if _stem(rel) in by_stem}
    missing = [rel for rel in files.rels if rel not in found]
    problems = []
    if missing:
        example = folder / missing[0]
        problems.append(f"{len(missing)} image(s) have no file, e.g. expected {example}: {_listing(missing)}")
    if unmatched:
        problems.append(f"{len(unmatched)} file(s) in {folder} match no image of the split: {_listing(unmatched)}")
    if problems and not allow_missing:
        layout = "DIR/<set>/" if several_sets else "DIR/"
        layout += "<split>/<name>" if part.paired else "<name>"
        raise FileNotFoundError(
            f"{where}: {'; '.join(problems)}. The folder must mirror the set ({layout}, any image extension; "
            f"here e.g. {expected}); set allow_missing=true to score the rest and count the others"
        )
    for problem in problems:
        log.warning("%s: %s (allow_missing=true: not scored)", where, problem)
    _check_sizes(where, found, part)
    return Predictions(folder, found, missing, unmatched)


def _check_sizes(where: str, found: dict[str, Path], part: EvalSplit) -> None:
    wrong, unreadable = [], []
    for rel, path in found.items():
        try:
            size = load_pil(path).size
        except BadImageError as err:
            unreadable.append(f"{path} ({err.reason})")
            continue
        square = size[0] == size[1]
        if part.hq_dir is None:
            if not square:
                wrong.append(f"{path} is {size[0]}x{size[1]} (not square)")
            continue
        gt = load_pil(part.hq_dir / rel).size
        if size != gt and not (square and gt[0] == gt[1]):
            wrong.append(f"{path} is {size[0]}x{size[1]}, its ground truth {part.hq_dir / rel} {gt[0]}x{gt[1]}")
    if unreadable:
        raise ValueError(
            f"{where}: {len(unreadable)} file(s) cannot be decoded: {_listing(unreadable)}. Replace them with the "
            "method's restored images (or remove them and set allow_missing=true to score the rest)"
        )
    if wrong:
        raise ValueError(
            f"{where}: {len(wrong)} file(s) of the wrong size: {_listing(wrong)}. A prediction must have its "
            "ground truth's size, or be square like a square ground truth (it is resized to it, as DR2's "
            "outputs are); without ground truth it must be a square face"
        )
