"""Folders of face images: listing, scanning for bad files, and a square-crop `ImageFolder` dataset.

Decoding (odd modes, alpha, 16-bit, EXIF, corrupt files -> `BadImageError`) lives in `lightning_dr2.image_io`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TypeVar

import albumentations as A
import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from lightning_dr2.image_io import BadImageError, center_crop_resize, image_to_tensor, list_images, load_pil
from lightning_dr2.parallel import spawn_pool

log = logging.getLogger(__name__)

T = TypeVar("T")


class NoReadableImagesError(ValueError):
    """Every file a dataset could substitute for an undecodable one is undecodable too (one message argument, so
    the error keeps its type when a DataLoader worker re-raises it)."""


def first_readable(
    count: int, start: int, load: Callable[[int], T], key: Callable[[int], str], bad: set[str], where: str
) -> tuple[int, T]:
    """`(i, load(i))` for the first item from `start` on (wrapping) that decodes: an item whose file raises
    `BadImageError` is logged, remembered in `bad` (by `key(i)`) and replaced by the next one, so one broken
    file costs a counted skip, the same substitute on every epoch and rank, instead of the run."""
    for step in range(count):
        i = (start + step) % count
        if key(i) in bad:
            continue
        try:
            return i, load(i)
        except BadImageError as err:
            bad.add(key(i))
            log.warning("skipping %s (%d bad so far in this process)", err, len(bad))
    raise NoReadableImagesError(
        f"none of the {count} items of {where} could be decoded ({len(bad)} bad files, e.g. {sorted(bad)[:3]}); "
        "run `lightning_dr2.datasets.scan` on the folder to list the reasons, and replace or remove the files"
    )


def _check(path: Path) -> str | None:
    try:
        load_pil(path)
    except BadImageError as err:
        return err.reason
    return None


def scan(
    files: str | os.PathLike | Iterable[str | os.PathLike], workers: int = 0, progress: bool = True
) -> dict[str, str]:
    """Decode every image (a folder, or an explicit list of files) and return {path: reason} for the bad ones.

    Full decoding is the only reliable check (headers of truncated files look fine). `workers` > 0 decodes
    in that many processes, which matters for 70k FFHQ PNGs.
    """
    if isinstance(files, (str, os.PathLike)):
        files = list_images(files)
    paths = [Path(f) for f in files]
    bar = dict(total=len(paths), desc="checking images", unit="img", disable=not progress)
    if workers > 0:
        with spawn_pool(workers) as pool:
            reasons = list(tqdm(pool.map(_check, paths, chunksize=64), **bar))
    else:
        reasons = [_check(p) for p in tqdm(paths, **bar)]
    return {str(p): r for p, r in zip(paths, reasons, strict=True) if r is not None}


class ImageFolder(Dataset):
    """Square face images from a folder as {"image": (3, size, size) float in [-1, 1], "index", "path"}.

    A file that fails to decode is logged, remembered in `bad_files` and replaced by the next readable
    file (index + 1, + 2, ... wrapping; `first_readable`), so one broken file does not stop a long run and the
    substitute is the same on every epoch and rank. `index`/`path` in the item name the file actually returned.
    `bad_files` is per process: with DataLoader workers each worker keeps its own set. Use `validate()`
    to find all bad files up front.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        size: int,
        flip: bool = False,
        files: Sequence[str | os.PathLike] | None = None,
    ):
        self.root = Path(root)
        self.size = int(size)
        self.files = [Path(f) for f in files] if files is not None else list_images(self.root)
        self.flip = flip
        self._flipper = A.HorizontalFlip(p=1.0)
        self.bad_files: set[str] = set()

    def __len__(self) -> int:
        return len(self.files)

    def _load(self, index: int, flip: bool) -> np.ndarray:
        img = center_crop_resize(load_pil(self.files[index]), self.size)
        arr = np.array(img)  # writable copy: torch.from_numpy warns on read-only arrays
        if flip:
            arr = self._flipper(image=arr)["image"]
        return arr

    def __getitem__(self, key: int | tuple[int, bool]) -> dict:
        """`dataset[i]`, or `dataset[(i, flip)]` as `datamodule.StreamSampler` yields: the sampler decides the flip, so
        augmentation is a pure function of (seed, epoch, position), identical across worker counts and
        after a resume. A plain index flips with probability 1/2 from torch's RNG when `flip` is on."""
        if isinstance(key, tuple):
            index, flip = int(key[0]), bool(key[1]) and self.flip
        else:
            index, flip = int(key), self.flip and bool(torch.randint(2, ()).item())
        i, arr = first_readable(
            len(self.files),
            index,
            lambda i: self._load(i, flip),
            lambda i: str(self.files[i]),
            self.bad_files,
            self.root,
        )
        return {"image": image_to_tensor(arr), "index": i, "path": str(self.files[i])}

    def validate(self, workers: int = 0, progress: bool = True) -> dict[str, str]:
        """Decode every file now; return {path: reason} for the bad ones and remember them in `bad_files`."""
        bad = scan(self.files, workers=workers, progress=progress)
        self.bad_files.update(bad)
        return bad
