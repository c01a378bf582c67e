"""`FaceDataModule`: one folder of aligned faces -> deterministic train/val loaders (DDP-ready)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from lightning_dr2.image_io import list_images

from .images import ImageFolder, NoReadableImagesError
from .synthetic import MANIFEST, generate_faces

log = logging.getLogger(__name__)


class StreamSampler(Sampler):
    """One seeded stream of (index, flip) pairs for a whole training run, sharded over ranks.

    The stream is the concatenation of epochs; epoch e is a permutation of the dataset (with a flip bit
    per position) drawn from (seed, e) and split over ranks like `DistributedSampler(drop_last=True)`.
    Where iteration starts is read from `position()` (samples already consumed by this rank, i.e.
    global_step * accumulation * batch size) every time the loader is iterated, so a run resumed from
    any checkpoint, mid-epoch included, sees exactly the samples the uninterrupted run saw, for any
    number of DataLoader workers. `length` is the run's total samples per rank (max_steps * ...).
    """

    def __init__(
        self,
        size: int,
        length: int,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
        flip: bool = True,
        position: Callable[[], int] = lambda: 0,
    ) -> None:
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in [0, {num_replicas})")
        if size < num_replicas:
            raise ValueError(f"{size} training images cannot be shared by {num_replicas} processes")
        self.size = size
        self.length = length
        self.num_replicas = num_replicas
        self.rank = rank
        self.seed = seed
        self.flip = flip
        self.position = position
        self.per_epoch = size // num_replicas

    def __len__(self) -> int:
        return self.length

    def epoch(self, epoch: int) -> list[tuple[int, bool]]:
        """This rank's share of epoch `epoch` of the stream."""
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(self.size, generator=gen).tolist()
        flips = torch.randint(2, (self.size,), generator=gen).tolist() if self.flip else [0] * self.size
        usable = self.per_epoch * self.num_replicas
        return [(order[p], bool(flips[p])) for p in range(self.rank, usable, self.num_replicas)]

    def __iter__(self) -> Iterator[tuple[int, bool]]:
        start = self.position()
        epoch, offset = divmod(start, self.per_epoch)
        remaining = self.length - start
        while remaining > 0:
            chunk = self.epoch(epoch)[offset : offset + remaining]
            yield from chunk
            remaining -= len(chunk)
            epoch, offset = epoch + 1, 0


class ShardSampler(Sampler):
    """Every index exactly once across ranks (no padding duplicates), in order."""

    def __init__(self, size: int, num_replicas: int = 1, rank: int = 0) -> None:
        self.indices = list(range(rank, size, num_replicas))

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self):
        return iter(self.indices)


class ShardedData(pl.LightningDataModule):
    """One dataset for predict/test, sharded inside each process by its own rank, without padding.

    The loader is built in the worker process (so `ddp_spawn` and `ddp` both shard correctly) and every
    item is seen exactly once across ranks: what restoration and evaluation need.
    """

    def __init__(
        self, dataset: Dataset, batch_size: int, num_workers: int = 0, collate_fn: Callable[[list], Any] | None = None
    ) -> None:
        super().__init__()
        self.dataset, self.batch_size, self.num_workers, self.collate_fn = dataset, batch_size, num_workers, collate_fn

    def _loader(self) -> DataLoader:
        trainer = self.trainer
        return DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            sampler=ShardSampler(len(self.dataset), trainer.world_size, trainer.global_rank),
            num_workers=self.num_workers,
            collate_fn=self.collate_fn,
        )

    def predict_dataloader(self) -> DataLoader:
        return self._loader()

    def test_dataloader(self) -> DataLoader:
        return self._loader()


def trainer_geometry(datamodule: pl.LightningDataModule) -> tuple[int, int]:
    """(world size, global rank) of the Trainer a DataModule is attached to; (1, 0) outside one."""
    trainer = getattr(datamodule, "trainer", None)
    return (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)


def sampled_loader(
    dataset: Dataset, sampler: Sampler, batch_size: int, drop_last: bool, num_workers: int, pin_memory: bool
) -> DataLoader:
    """The DataLoader of our DataModules: our own (sharded, step-positioned) sampler, workers kept alive."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=drop_last,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        pin_memory=pin_memory,
    )


class FaceDataModule(pl.LightningDataModule):
    """Faces from `root`, split once into train/val with a seeded permutation.

    The split depends only on the sorted file list and `seed`, so it is identical on every rank, run and
    machine. Synthetic faces only when asked: with `synthetic` (kwargs of `generate_faces`, e.g.
    {"n": 512, "size": 64}) `root` is their cache, filled in `prepare_data` (Lightning runs it on one
    process only) when missing or empty and completed when it holds our synthetic manifest; a `root`
    holding other images is an error (never mixed). Without it, a missing or imageless `root` is an
    error naming the folder: a mistyped path never becomes generated training data. Training reads
    one `StreamSampler` of max_steps batches, sharded over the trainer's ranks and positioned by the
    global step (run the Trainer with `use_distributed_sampler=False`); validation is sharded without
    padding, so every validation image is used exactly once.
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

    def _holds_other_images(self) -> bool:
        if (self.root / MANIFEST).is_file():
            return False
        try:
            list_images(self.root)
        except (OSError, ValueError):
            return False
        return True

    def prepare_data(self) -> None:
        if self.synthetic is None:
            return
        if self._holds_other_images():
            raise ValueError(
                f"data.root={self.root} holds images that are not our synthetic faces (no {MANIFEST}), but "
                "data.synthetic=true uses data.root as the cache of generated faces and never mixes the two. "
                "Set data.synthetic=false to train on these images, or point data.root at a new folder for "
                "synthetic faces"
            )
        log.info("synthetic faces in %s (%s)", self.root, self.synthetic)
        generate_faces(self.root, **self.synthetic, flag="data.root")

    def _list_images(self) -> list[Path]:
        hint = (
            "Point data.root at a folder of aligned face images, or set data.synthetic=true (with data.synthetic_n) "
            "to train on generated faces cached in data.root"
        )
        try:
            return list_images(self.root)
        except NotADirectoryError:
            raise NotADirectoryError(f"data.root={self.root} is a file, not a folder of images. {hint}") from None
        except FileNotFoundError:
            raise FileNotFoundError(f"training data folder data.root={self.root} does not exist. {hint}") from None
        except ValueError as err:
            raise ValueError(f"training data folder data.root={self.root} cannot be used: {err}. {hint}") from None

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
        files = self._list_images()
        n_train, n_val = self.split_sizes(len(files))
        order = np.random.default_rng(self.seed).permutation(len(files))
        val_idx, train_idx = sorted(order[:n_val]), sorted(order[n_val:])
        self.train_set = ImageFolder(self.root, self.image_size, self.flip, [files[i] for i in train_idx])
        self.val_set = ImageFolder(self.root, self.image_size, False, [files[i] for i in val_idx])
        log.info("%s: %d train / %d val images", self.root, n_train, n_val)

    def _loader(self, dataset: ImageFolder, train: bool) -> DataLoader:
        world, rank = trainer_geometry(self)
        if train:
            sampler: Sampler = self._train_sampler(dataset, world, rank)
        else:
            sampler = ShardSampler(len(dataset), world, rank)
        return sampled_loader(dataset, sampler, self.batch_size, train, self.num_workers, self.pin_memory)

    def _train_sampler(self, dataset: ImageFolder, world: int, rank: int) -> StreamSampler:
        trainer = getattr(self, "trainer", None)
        size = len(dataset)
        per_epoch = size // world
        if self.batch_size > per_epoch:
            # Few images: decode them all now, so the message says when they, not the batch size, are the problem.
            bad = dataset.validate(progress=False)
            unreadable = f"; {len(bad)} of them cannot be decoded ({_first(bad)})" if bad else ""
            if bad and len(bad) == size:
                raise NoReadableImagesError(
                    f"none of the {size} training images in data.root={self.root} can be decoded ({_first(bad)}); "
                    "replace or remove them"
                )
            raise ValueError(
                f"data.batch_size={self.batch_size} is larger than the {per_epoch} training images per process in "
                f"data.root={self.root}{unreadable}; lower data.batch_size or add images"
            )
        if trainer is None or trainer.max_steps <= 0:
            return StreamSampler(size, per_epoch - per_epoch % self.batch_size, world, rank, self.seed, self.flip)
        per_step = self.batch_size * trainer.accumulate_grad_batches
        return StreamSampler(
            size,
            trainer.max_steps * per_step,
            world,
            rank,
            self.seed,
            self.flip,
            position=lambda: trainer.global_step * per_step,
        )

    def train_dataloader(self) -> DataLoader:
        if self.train_set is None:
            self.setup("fit")
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader:
        if self.val_set is None:
            self.setup("validate")
        return self._loader(self.val_set, train=False)


def _first(bad: dict[str, str], shown: int = 3) -> str:
    """`path: reason; ...` for the first few undecodable files of a `scan`."""
    return "; ".join(f"{path}: {reason}" for path, reason in list(bad.items())[:shown])
