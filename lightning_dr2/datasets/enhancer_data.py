"""Training pairs for the enhancer: (y, x) with x an HQ face and y = DR2(x) blurred by k_sigma.

Two sources of DR2 outputs:
- folder: `dr2_root/<rel>.png` for every HQ `<rel>` (what `dr2-cache` writes to OUT/dr2, one sample per
  folder, and `restore ... enhancer.name=none save_dr2=true` to OUTPUT/dr2);
- on_the_fly: the dataset yields the HQ face at the UNet size with a per-image (N, tau) and seed, and
  `OnTheFlyDR2` runs the DR2 sampler on the batch on the training device (small experiments only).

Either way the DR2 output goes through the same steps: bicubic resize to the enhancer size (as DR2E does
at inference), quantisation to uint8 (as a saved PNG), then `PairAugment` (albumentations): horizontal
flip and optional colour jitter applied identically to both images, and the Gaussian blur k_sigma on the
input only. Everything random about an item comes from `item_rng(seed, epoch, index)`, so pairs do not
depend on worker count, batch composition or resumption.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import albumentations as A  # noqa: N812
import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from lightning_dr2.datasets.datamodule import ShardSampler, StreamSampler, sampled_loader, trainer_geometry
from lightning_dr2.datasets.images import first_readable
from lightning_dr2.datasets.synthetic import MANIFEST, generate_faces
from lightning_dr2.image_io import (
    BadImageError,
    center_crop_resize,
    image_to_tensor,
    list_images,
    load_pil,
    output_name,
    resize,
    to_uint8_images,
)
from lightning_dr2.provenance import MANIFEST as OUTPUTS_MANIFEST
from lightning_dr2.provenance import read_manifest

log = logging.getLogger(__name__)

MODES = ("folder", "on_the_fly")
VAL_EPOCH = 2**31 - 1  # validation items use this fixed "epoch": the same pairs at every validation


def item_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The one source of randomness of a training item: (N, tau), DR2 noise seed, augmentation seed."""
    return np.random.default_rng([int(seed), int(epoch), int(index)])


@dataclass(frozen=True)
class Setting:
    """One DR2 setting an item may be drawn with (omega None = the official rule)."""

    N: int  # noqa: N815 (the paper's name)
    tau: int
    omega: int | None = None


class PairAugment:
    """albumentations pipeline of a pair: shared flip / colour jitter, then k_sigma blur of the input only.

    `sigma` is the (low, high) range of the blur's standard deviation in enhancer pixels (high = 0: no
    blur); `color_jitter` the strength of brightness/contrast/saturation jitter (hue a tenth of it), 0 = off.
    """

    def __init__(self, sigma: Sequence[float] = (0.1, 3.0), flip: bool = True, color_jitter: float = 0.0) -> None:
        low, high = float(sigma[0]), float(sigma[1])
        if not 0.0 <= low <= high:
            raise ValueError(f"blur sigma range must be 0 <= low <= high, got {list(sigma)}")
        if color_jitter < 0:
            raise ValueError(f"color_jitter must be >= 0, got {color_jitter}")
        self.sigma = (low, high)
        shared: list[Any] = [A.HorizontalFlip(p=0.5 if flip else 0.0)]
        if color_jitter > 0:
            c = float(color_jitter)
            shared.append(A.ColorJitter(brightness=c, contrast=c, saturation=c, hue=min(0.5, c / 10), p=1.0))
        self.shared = A.Compose(shared, additional_targets={"target": "image"}, strict=True)
        self.blur = A.Compose([A.GaussianBlur(blur_limit=0, sigma_limit=self.sigma, p=1.0)]) if high > 0 else None

    def __call__(self, dr2: np.ndarray, x: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """uint8 HxWx3 (DR2 output at the enhancer size, HQ face) -> (y, dr2, x) after augmentation."""
        if dr2.shape != x.shape:
            raise ValueError(f"DR2 output {dr2.shape} and HQ face {x.shape} differ in size; resize first")
        self.shared.set_random_seed(seed)
        out = self.shared(image=dr2, target=x)
        dr2, x = out["image"], out["target"]
        if self.blur is None:
            return dr2, dr2, x
        self.blur.set_random_seed(seed + 1)
        return self.blur(image=dr2)["image"], dr2, x


def dr2_at_enhancer_size(dr2: torch.Tensor, size: int) -> list[np.ndarray]:
    """(B, 3, h, w) DR2 outputs in [-1, 1] -> uint8 arrays at the enhancer size (bicubic, as at inference)."""
    return to_uint8_images(resize(dr2.float().clamp(-1, 1), size).clamp(-1, 1))


@dataclass(frozen=True)
class DR2Folder:
    """`data.dr2_root` and, when the restore/dr2-cache manifest beside it exists, the record of each of its files.

    `records`: file under `root` (e.g. "sub/a.png") -> its manifest record, for the outputs the manifest lists as
    finished (None without a manifest). Pairing goes through it, so an HQ face is never paired with another
    file's DR2 output (`a.jpg` and `a.png` share the output name a.png) or with a file the manifest does not list
    (a stale output of an earlier run, a stray): the folder's files are what its manifest says.
    """

    root: Path
    manifest: Path
    records: dict[str, dict[str, Any]] | None

    @classmethod
    def read(cls, root: str | Path) -> DR2Folder:
        root = Path(root)
        manifest = read_manifest(root.parent)
        if manifest is None:
            return cls(root, root.parent / OUTPUTS_MANIFEST, None)
        records: dict[str, dict[str, Any]] = {}
        for record in manifest["images"]:
            if not isinstance(record, dict) or record.get("status") != "ok":
                continue
            for key in ("file", "dr2"):  # dr2-cache: file = "dr2_s1/a.png"; restore: dr2 = "dr2/a.png"
                made = record.get(key)
                if made and Path(made).parts[0] == root.name:
                    records[Path(made).relative_to(root.name).as_posix()] = record
        return cls(root, root.parent / OUTPUTS_MANIFEST, records)

    def problem(self, rel: str) -> tuple[str, str] | None:
        """Why HQ face `rel` has no DR2 output to pair with, as ("missing" | "taken", reason); None: it has one."""
        name = output_name(rel)
        if self.records is None:
            listed: str | None = rel
        else:
            record = self.records.get(name)
            listed = None if record is None else record.get("source", record["name"])
        if listed is None or not (self.root / name).is_file():
            return "missing", f"not listed in {self.manifest}" if (self.root / name).is_file() else "no file"
        return None if listed == rel else ("taken", f"{self.root / name} was made from {listed}, not from {rel}")


def _stack(arrays: Sequence[np.ndarray]) -> torch.Tensor:
    return torch.stack([image_to_tensor(a) for a in arrays])


class EnhancerPairs(Dataset):
    """Items of one split. Keys are `(index, epoch)` (training, from `PairStreamSampler`) or an index (validation).

    folder mode items: {"y", "dr2", "x"} at the enhancer size, float in [-1, 1]; on_the_fly items: the HQ
    face "x" (enhancer size) and "x_dr2" (UNet size), the drawn N/tau/omega and the two seeds.
    """

    def __init__(
        self,
        hq_root: str | Path,
        files: Sequence[Path],
        size: int,
        augment: PairAugment,
        settings: Sequence[Setting],
        seed: int = 0,
        mode: str = "folder",
        dr2_root: str | Path | None = None,
        unet_size: int | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"data.mode must be one of {MODES}, got {mode!r}")
        if mode == "folder" and dr2_root is None:
            raise ValueError("data.mode=folder needs data.dr2_root (a folder of DR2 outputs mirroring the HQ names)")
        if mode == "on_the_fly" and not unet_size:
            raise ValueError("data.mode=on_the_fly needs the DR2 UNet's image size")
        if not settings:
            raise ValueError("dr2.settings must list at least one (N, tau)")
        self.hq_root = Path(hq_root)
        self.files = list(files)
        self.size = int(size)
        self.augment = augment
        self.settings = list(settings)
        self.seed = int(seed)
        self.mode = mode
        self.dr2_root = None if dr2_root is None else Path(dr2_root)
        self.unet_size = unet_size  # folder mode: the size every DR2 output must have (None: not checked)
        self.bad_files: set[str] = set()  # undecodable HQ or DR2 files met so far: their pairs are substituted

    def __len__(self) -> int:
        return len(self.files)

    def rel(self, index: int) -> str:
        return self.files[index].relative_to(self.hq_root).as_posix()

    def dr2_path(self, index: int) -> Path:
        assert self.dr2_root is not None
        return self.dr2_root / output_name(self.rel(index))

    def missing_dr2(self) -> list[str]:
        """HQ names without a DR2 output in `dr2_root` (folder mode)."""
        return [self.rel(i) for i in range(len(self)) if not self.dr2_path(i).is_file()]

    def _dr2(self, index: int) -> torch.Tensor:
        path = self.dr2_path(index)
        if not path.is_file():
            raise FileNotFoundError(f"no DR2 output {path} for HQ face {self.files[index]}")
        img = np.array(load_pil(path))
        if img.shape[0] != img.shape[1]:
            raise ValueError(f"DR2 output {path} is {img.shape[1]}x{img.shape[0]}, not square: not a DR2 output")
        if self.unet_size is not None and img.shape[0] != self.unet_size:
            raise ValueError(
                f"DR2 output {path} is {img.shape[0]} px but the recipe's DR2 UNet works at {self.unet_size} px: it "
                f"was not made by that UNet, and the enhancer would learn from {self.size / img.shape[0]:g}x "
                f"upsampled inputs while it sees {self.size / self.unet_size:g}x at inference. Rebuild data.dr2_root "
                "with the recipe's UNet (dr2-cache), or set dr2.unet_weights / dr2.net to the one that made it"
            )
        if img.shape[0] > self.size:
            raise ValueError(
                f"DR2 output {path} is {img.shape[0]} px, larger than the enhancer size {self.size}: "
                "DR2 runs at the UNet size and the enhancer input is upsampled from it; check data.dr2_root"
            )
        return image_to_tensor(img)[None]

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, epoch = (int(key[0]), int(key[1])) if isinstance(key, tuple) else (int(key), VAL_EPOCH)
        rng = item_rng(self.seed, epoch, index)
        setting = self.settings[int(rng.integers(len(self.settings)))]
        dr2_seed, aug_seed = int(rng.integers(2**62)), int(rng.integers(2**31 - 2))
        # A pair whose HQ or DR2 file does not decode is replaced by the next one (counted, logged).
        index, (hq, dr2) = first_readable(
            len(self), index, self._load, lambda i: str(self.files[i]), self.bad_files, self.hq_root
        )
        x = np.array(center_crop_resize(hq, self.size))
        if self.mode == "folder":
            dr2 = dr2_at_enhancer_size(dr2, self.size)[0]
            y, dr2, x = self.augment(dr2, x, aug_seed)
            return {"y": image_to_tensor(y), "dr2": image_to_tensor(dr2), "x": image_to_tensor(x), "index": index}
        return {
            "x": image_to_tensor(x),
            "x_dr2": image_to_tensor(np.array(center_crop_resize(hq, int(self.unet_size)))),
            "N": setting.N,
            "tau": setting.tau,
            "omega": -1 if setting.omega is None else setting.omega,
            "dr2_seed": dr2_seed,
            "aug_seed": aug_seed,
            "index": index,
        }

    def _load(self, index: int) -> tuple[Any, torch.Tensor | None]:
        """The HQ face (decoded once: x, and on_the_fly's DR2 input at the UNet size) and, in folder mode, its
        DR2 output; `BadImageError` when either does not decode."""
        return load_pil(self.files[index]), self._dr2(index) if self.mode == "folder" else None


class OnTheFlyDR2:
    """Turns an on_the_fly batch into pairs: DR2 per (N, tau) group with per-image seeds, then `PairAugment`.

    `dr2` is a `lightning_dr2.dr2.DR2` around a frozen UNet; it is kept out of the LightningModule so
    checkpoints and the EMA hold the enhancer only. The UNet follows the batch's device.
    """

    def __init__(self, dr2: Any, size: int, augment: PairAugment) -> None:
        self.dr2 = dr2
        self.size = int(size)
        self.augment = augment

    @torch.no_grad()
    def __call__(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        x_in = batch["x_dr2"]
        self.dr2.unet.to(x_in.device)
        keys = [
            (n, tau, None if omega < 0 else omega)
            for n, tau, omega in zip(batch["N"].tolist(), batch["tau"].tolist(), batch["omega"].tolist(), strict=True)
        ]
        dr2 = self.dr2.by_setting(x_in, keys, batch["dr2_seed"].tolist())
        triples = [
            self.augment(d, x, int(s))
            for d, x, s in zip(
                dr2_at_enhancer_size(dr2, self.size),
                to_uint8_images(batch["x"]),
                batch["aug_seed"].tolist(),
                strict=True,
            )
        ]
        device = batch["x"].device
        out = {k: v for k, v in batch.items() if k not in ("x", "x_dr2")}
        for i, name in enumerate(("y", "dr2", "x")):
            out[name] = _stack([t[i] for t in triples]).to(device)
        return out


class PairStreamSampler(StreamSampler):
    """`StreamSampler`'s seeded, rank-sharded, step-positioned stream, yielding (index, epoch) keys."""

    def epoch(self, epoch: int) -> list[tuple[int, int]]:  # type: ignore[override]
        return [(index, epoch) for index, _ in super().epoch(epoch)]


class EnhancerDataModule(pl.LightningDataModule):
    """HQ faces from `hq_root` split once (seeded) into train / `val_n` validation faces, paired with DR2 outputs.

    The training stream is positioned by `trainer.global_step // steps_per_batch` (the GAN module takes two
    optimizer steps per batch), so a resumed run sees exactly the pairs the uninterrupted run saw.
    """

    def __init__(
        self,
        hq_root: str,
        size: int,
        batch_size: int,
        augment: PairAugment,
        settings: Sequence[Setting],
        mode: str = "folder",
        dr2_root: str | None = None,
        unet_size: int | None = None,
        num_workers: int = 0,
        val_n: int = 4,
        seed: int = 0,
        synthetic: dict | None = None,
        steps_per_batch: int = 2,
    ) -> None:
        super().__init__()
        self.hq_root = Path(hq_root)
        self.size, self.batch_size, self.num_workers = size, batch_size, num_workers
        self.augment, self.settings, self.mode = augment, list(settings), mode
        self.dr2_root, self.unet_size = dr2_root, unet_size
        self.val_n, self.seed, self.synthetic, self.steps_per_batch = val_n, seed, synthetic, steps_per_batch
        self.train_set: EnhancerPairs | None = None
        self.val_set: EnhancerPairs | None = None

    def prepare_data(self) -> None:
        if self.synthetic is None:
            return
        if (self.hq_root / MANIFEST).is_file() or not self.hq_root.is_dir() or not any(self.hq_root.iterdir()):
            generate_faces(self.hq_root, **self.synthetic, flag="data.hq_root")

    def _pairs(self, files: Sequence[Path]) -> EnhancerPairs:
        return EnhancerPairs(
            self.hq_root,
            files,
            self.size,
            self.augment,
            self.settings,
            self.seed,
            self.mode,
            self.dr2_root,
            self.unet_size,
        )

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        files = list_images(self.hq_root)
        if self.mode == "folder":
            files = self._paired(files)
        n_val = min(self.val_n, max(0, len(files) - 1))
        order = np.random.default_rng(self.seed).permutation(len(files))
        val, train = sorted(order[:n_val]), sorted(order[n_val:])
        self.train_set = self._pairs([files[i] for i in train])
        self.val_set = self._pairs([files[i] for i in val])
        if self.mode == "folder":
            try:
                self.train_set._dr2(0)  # the DR2 outputs' size, checked on the first before training starts
            except BadImageError:
                pass  # an undecodable file is skipped when its pair is drawn
        log.info("%s: %d train / %d val faces (%s DR2 outputs)", self.hq_root, len(train), len(val), self.mode)

    def _paired(self, files: list[Path]) -> list[Path]:
        """The HQ faces that have their own DR2 output in `dr2_root` (`DR2Folder`). One whose output name was
        taken by another input (`a.jpg` made a.png, `a.png` has none) is skipped with a warning naming it; one
        without an output listed is an error (the cache is incomplete)."""
        folder = DR2Folder.read(self.dr2_root)
        rels = [f.relative_to(self.hq_root).as_posix() for f in files]
        problems = {rel: problem for rel in rels if (problem := folder.problem(rel)) is not None}
        taken = {rel: why for rel, (kind, why) in problems.items() if kind == "taken"}
        missing = {rel: why for rel, (kind, why) in problems.items() if kind == "missing"}
        if missing:
            examples = "; ".join(f"{rel}: {why}" for rel, why in list(missing.items())[:5])
            raise FileNotFoundError(
                f"{len(missing)} of {len(files)} HQ faces in {self.hq_root} have no DR2 output in {self.dr2_root} "
                f"(expected <rel>.png), e.g. {examples}. Make them with `python -m lightning_dr2 dr2-cache --hq "
                f"{self.hq_root} --out OUT` and set data.dr2_root=OUT/dr2, or use data.mode=on_the_fly"
            )
        if taken:
            log.warning(
                "%d HQ face(s) in %s skipped: their output name belongs to another input's DR2 output (%s); rename "
                "them so each face has its own output name",
                len(taken),
                self.hq_root,
                "; ".join(f"{rel}: {why}" for rel, why in list(taken.items())[:5]),
            )
        return [f for f, rel in zip(files, rels, strict=True) if rel not in taken]

    def train_dataloader(self) -> DataLoader:
        self.setup("fit")
        assert self.train_set is not None
        trainer = self.trainer
        world, rank = trainer_geometry(self)
        if self.batch_size > len(self.train_set) // world:
            raise ValueError(
                f"data.batch_size={self.batch_size} is larger than the {len(self.train_set) // world} training "
                f"faces per process in {self.hq_root}; lower it or add faces"
            )
        iterations = trainer.max_steps // self.steps_per_batch
        position: Callable[[], int] = lambda: trainer.global_step // self.steps_per_batch * self.batch_size  # noqa: E731
        sampler = PairStreamSampler(
            len(self.train_set), iterations * self.batch_size, world, rank, self.seed, flip=False, position=position
        )
        return self._loader(self.train_set, sampler, drop_last=True)

    def val_dataloader(self) -> DataLoader:
        self.setup("validate")
        assert self.val_set is not None
        world, rank = trainer_geometry(self)
        return self._loader(self.val_set, ShardSampler(len(self.val_set), world, rank), drop_last=False)

    def _loader(self, dataset: EnhancerPairs, sampler: Any, drop_last: bool) -> DataLoader:
        return sampled_loader(dataset, sampler, self.batch_size, drop_last, self.num_workers, torch.cuda.is_available())
