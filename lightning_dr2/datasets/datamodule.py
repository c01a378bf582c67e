"""`FaceDataModule`: one folder of aligned faces -> deterministic train/val loaders (DDP-ready)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from .images import ImageFolder, list_images
from .synthetic import MANIFEST, generate_faces

log = logging.getLogger(__name__)


class FaceDataModule(pl.LightningDataModule):
    """Faces from `root`, split once into train/val with a seeded permutation.

    The split depends only on the sorted file list and `seed`, so it is identical on every rank, run and
    machine. With `synthetic` (kwargs of `generate_faces`, e.g. {"n": 512, "size": 64}) an empty `root`
    is filled with synthetic faces in `prepare_data`, which Lightning runs on one process only; a folder
    already holding our synthetic manifest is completed (resumed) the same way, a folder of real images
    is never written to. Samplers are left to Lightning, which inserts a DistributedSampler under DDP.
    """

    def __init__(
        self,
        root: str,
        image_size: int,
        batch_size: int,
        num_workers: int = 0,
        val_fraction: float = 0.05,
        val_max: int = 64,
        flip: bool = True,
        seed: int = 0,
        synthetic: dict | None = None,
        pin_memory: bool | None = None,
    ):
        super().__init__()
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        self.root = Path(root)
        self.image_size = image_size
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.val_fraction = val_fraction
        self.val_max = val_max
        self.flip = flip
        self.seed = seed
        self.synthetic = dict(synthetic) if synthetic else None
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.train_set: ImageFolder | None = None
        self.val_set: ImageFolder | None = None

    def _needs_synthetic(self) -> bool:
        if (self.root / MANIFEST).is_file():
            return True
        try:
            list_images(self.root)
        except (FileNotFoundError, ValueError):
            return True
        return False

    def prepare_data(self) -> None:
        if self.synthetic is not None and self._needs_synthetic():
            log.info("generating synthetic faces in %s (%s)", self.root, self.synthetic)
            generate_faces(self.root, **self.synthetic)

    def split_sizes(self, n: int) -> tuple[int, int]:
        """(train, val) sizes: val is val_fraction of n, at most val_max, at least 1 when n >= 2
        (unless val_fraction or val_max is 0, which turns validation off)."""
        if n < 2 or self.val_fraction == 0 or self.val_max == 0:
            return n, 0
        n_val = min(self.val_max, max(1, round(n * self.val_fraction)), n - 1)
        return n - n_val, n_val

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return  # Lightning calls setup per stage; list and split once
        files = list_images(self.root)
        n_train, n_val = self.split_sizes(len(files))
        order = np.random.default_rng(self.seed).permutation(len(files))
        val_idx, train_idx = sorted(order[:n_val]), sorted(order[n_val:])
        self.train_set = ImageFolder(self.root, self.image_size, self.flip, [files[i] for i in train_idx])
        self.val_set = ImageFolder(self.root, self.image_size, False, [files[i] for i in val_idx])
        log.info("%s: %d train / %d val images", self.root, n_train, n_val)

    def _loader(self, dataset: ImageFolder, train: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=train,
            drop_last=train and len(dataset) > self.batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=self.pin_memory,
        )

    def train_dataloader(self) -> DataLoader:
        if self.train_set is None:
            self.setup("fit")
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader:
        if self.val_set is None:
            self.setup("validate")
        return self._loader(self.val_set, train=False)
