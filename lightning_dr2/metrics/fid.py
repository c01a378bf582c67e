"""FID as a torchmetrics Metric with pytorch-fid / BasicSR numerics, and reference statistics of a folder.

Why not torchmetrics' FrechetInceptionDistance: it converts float images to uint8 by truncation and
resizes with antialiasing (torch-fidelity's graph), so its numbers differ from the papers'. Here:

* features: `FIDInceptionV3` (pytorch-fid's network and weights), fp32, images resized to 299 bilinearly
  without antialiasing inside the network;
* `quantize=True` (default) scores the images that would be saved as PNGs: clamp, round to uint8 levels
  (`to_uint8`, BasicSR's `tensor2img`), then BasicSR's loader arithmetic (x / 255 - 0.5) / 0.5;
* statistics are float64 sums (count, sum, sum of outer products), summed across processes by
  torchmetrics, so the result does not depend on batch size or GPU count; the Frechet distance is
  `frechet_distance` (pytorch-fid's scipy `sqrtm` formula) against a reference (mu, sigma).

Reference statistics: an `.npz` (mu, sigma[, count]; `fid-stats` writes these, pytorch-fid reads them) or
BasicSR's `inception_FFHQ_512-f7b384ab.pth` (dict mean/cov), both read by `load_stats`.
"""

from __future__ import annotations

import errno
import logging
import os
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from lightning_dr2.image_io import BadImageError, checked_value_range, list_images, read_image, to_uint8
from lightning_dr2.metrics.frechet import FeatureStats, FIDStats, frechet_distance, load_stats, save_stats
from lightning_dr2.metrics.network_metric import NetworkMetric
from lightning_dr2.nets.inception import FEATURE_DIM, load_fid_inception
from lightning_dr2.weights import find_weight

__all__ = ["FID", "FolderStats", "compute_fid_stats", "reference_path", "uint8_to_network_input"]

log = logging.getLogger(__name__)


def uint8_to_network_input(images: Tensor) -> Tensor:
    """uint8 levels (B, 3, H, W) -> float32 in [-1, 1] with BasicSR's arithmetic: (x / 255 - 0.5) / 0.5."""
    return (images.to(torch.float32) / 255.0 - 0.5) / 0.5


def reference_path(reference: str | os.PathLike, weights_dir: str | os.PathLike | None = None) -> Path:
    """A statistics file as given, or a bare file name (`inception_FFHQ_512-f7b384ab.pth`) found through the
    weights lookup (`weights_dir`, `$DR2_WEIGHTS`, `data/weights`): the recipes name the file, not a folder."""
    path = Path(reference).expanduser()
    if path.is_file():
        return path
    if path.name == str(reference):  # bare name: look it up like every other weight file
        return find_weight(path.name, weights_dir)
    raise FileNotFoundError(errno.ENOENT, f"FID reference statistics file not found: {path}", str(path))


def _resolve_reference(
    reference: str | os.PathLike | FIDStats | None, weights_dir: str | os.PathLike | None = None
) -> FIDStats | None:
    if reference is None:
        return None
    if isinstance(reference, (str, os.PathLike)):
        return load_stats(reference_path(reference, weights_dir))
    if isinstance(reference, tuple) and len(reference) in (2, 3):
        mu, sigma = np.asarray(reference[0], np.float64), np.asarray(reference[1], np.float64)
        count = reference[2] if len(reference) == 3 else None
        return FIDStats(mu, sigma, None if count is None else int(count))
    raise TypeError(
        f"FID reference must be a statistics file (.npz / BasicSR .pth), FIDStats or None, "
        f"got {type(reference).__name__}"
    )


class FID(NetworkMetric):
    """Frechet Inception Distance of the images passed to `update` against reference statistics.

    Args:
        reference: statistics file (`.npz` mu/sigma, BasicSR `.pth` mean/cov) as a path or a bare file name
            found through the weights lookup (`reference_path`), `FIDStats`, or None (only
            `stats()` is available then; used to compute reference statistics).
        network: feature extractor, images in [-1, 1] -> (B, D); default `load_fid_inception(weights_dir=...)`.
            Its `feature_dim` attribute (default 2048) sets D.
        weights_dir: extra folder for `pt_inception-2015-12-05-6726825d.pth` (see `lightning_dr2.weights`).
        value_range: range of the images passed to `update` ((0, 255) for uint8 tensors).
        quantize: round to uint8 levels first, as when FID is computed on saved PNGs.
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = False

    feature_sum: Tensor
    feature_outer: Tensor
    count: Tensor

    def __init__(
        self,
        reference: str | os.PathLike | FIDStats | None,
        network: nn.Module | None = None,
        weights_dir: str | os.PathLike | None = None,
        value_range: Sequence[float] = (-1.0, 1.0),
        quantize: bool = True,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.value_range = checked_value_range(value_range)
        self.quantize = bool(quantize)
        self.reference = _resolve_reference(reference, weights_dir)
        if network is None:
            network = load_fid_inception(weights_dir=weights_dir)
        self.net = network.eval().requires_grad_(False)
        self.feature_dim = int(getattr(network, "feature_dim", FEATURE_DIM))
        if self.reference is not None and self.reference.mu.shape != (self.feature_dim,):
            raise ValueError(
                f"reference statistics have dimension {self.reference.mu.shape[0]}, the network gives "
                f"{self.feature_dim}-d features (pool3 of the FID Inception is 2048)"
            )
        d = self.feature_dim
        self.add_state("feature_sum", default=torch.zeros(d, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("feature_outer", default=torch.zeros(d, d, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def _network_input(self, images: Tensor) -> Tensor:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"FID expects RGB images (B, 3, H, W), got {tuple(images.shape)}")
        if self.quantize:
            return uint8_to_network_input(to_uint8(images, self.value_range))
        low, high = self.value_range
        x = images.detach().to(torch.float32)
        if (low, high) == (-1.0, 1.0):
            return x
        return (x - low) / (high - low) * 2.0 - 1.0

    def forward(self, images: Tensor) -> None:  # type: ignore[override]
        """Same as `update`: a per-batch FID (a 2048x2048 sqrtm per step, on a handful of images) is
        meaningless and slow, so there is no batch value."""
        self.update(images)

    def update(self, images: Tensor) -> None:
        """Add a batch of (B, 3, H, W) images in `value_range` (any H, W: the network resizes to 299)."""
        self._add_features(self._network_input(images))

    def update_uint8(self, images: Tensor) -> None:
        """Add a batch of uint8 (B, 3, H, W) images as read from files (no quantisation needed)."""
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"update_uint8 expects uint8 (B, 3, H, W), got {images.dtype} {tuple(images.shape)}")
        self._add_features(uint8_to_network_input(images))

    def _add_features(self, x: Tensor) -> None:
        with torch.no_grad():
            features = self.net(x)
        features = features.reshape(features.shape[0], -1).to(torch.float64)
        if features.shape[1] != self.feature_dim:
            raise ValueError(f"network gave {features.shape[1]}-d features, expected {self.feature_dim}")
        if not bool(torch.isfinite(features).all()):
            raise ValueError("FID features contain NaN or inf")
        self.feature_sum += features.sum(dim=0)
        self.feature_outer += features.T @ features
        self.count += features.shape[0]

    def _feature_stats(self) -> FIDStats:
        count = int(round(float(self.count)))
        if count < 2:
            raise ValueError(f"FID needs at least 2 images for a covariance, got {count}")
        acc = FeatureStats.from_sums(count, self.feature_sum, self.feature_outer)
        return FIDStats(acc.mean(), acc.cov(), count)

    def stats(self) -> FIDStats:
        """(mu, sigma, count) of the features added so far (all processes, under DDP), float64 numpy."""
        with self.sync_context():
            return self._feature_stats()

    def compute(self) -> Tensor:
        if self.reference is None:
            raise ValueError("FID has no reference statistics (reference=None): use stats() instead")
        mu, sigma, _ = self._feature_stats()
        value = frechet_distance(mu, sigma, self.reference.mu, self.reference.sigma)
        return torch.tensor(value, dtype=torch.float64)


class FolderStats(NamedTuple):
    """What `compute_fid_stats` did: the statistics, where they were saved, the skipped files {path: reason}."""

    stats: FIDStats
    path: Path
    skipped: dict[str, str]


def _read_ahead(files: Sequence[Path], workers: int, ahead: int) -> Iterator[tuple[Path, np.ndarray | str]]:
    """(path, HxWx3 uint8 array or the reason it is bad), in order, decoding up to `ahead` files in threads.

    PIL releases the GIL while decoding, so threads overlap decoding with the network; the bounded window
    keeps memory flat on 70k-image folders.
    """

    def load(path: Path) -> np.ndarray | str:
        try:
            return read_image(path)
        except BadImageError as err:
            return err.reason

    if workers <= 0:
        for path in files:
            yield path, load(path)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: deque[tuple[Path, Future]] = deque()
        it = iter(files)
        for path in it:
            pending.append((path, pool.submit(load, path)))
            if len(pending) >= ahead:
                break
        while pending:
            path, future = pending.popleft()
            nxt = next(it, None)
            if nxt is not None:
                pending.append((nxt, pool.submit(load, nxt)))
            yield path, future.result()


def compute_fid_stats(
    folder: str | os.PathLike,
    out_path: str | os.PathLike,
    batch_size: int = 50,
    device: str | torch.device | None = None,
    network: nn.Module | None = None,
    weights_dir: str | os.PathLike | None = None,
    progress: bool = True,
    workers: int = 4,
) -> FolderStats:
    """FID reference statistics of every image under `folder`, saved to `out_path` (`.npz`: mu, sigma, count).

    Images keep their native resolution (the network resizes each to 299x299); images of equal size are
    batched together. Unreadable files are skipped, logged and returned in `skipped`; fewer than 2 readable
    images is an error. `device` defaults to CUDA when available.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    files = list_images(folder)
    if not files:
        raise ValueError(f"no images found under {folder}")
    device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    metric = FID(None, network=network, weights_dir=weights_dir).to(device)

    buckets: dict[tuple[int, ...], list[np.ndarray]] = {}  # same-size images wait here for a full batch
    skipped: dict[str, str] = {}

    def flush(shape: tuple[int, ...]) -> None:
        batch = np.stack(buckets.pop(shape))
        metric.update_uint8(torch.from_numpy(batch).permute(0, 3, 1, 2).to(device))

    bar = tqdm(total=len(files), desc="fid-stats", unit="img", disable=not progress)
    for path, image in _read_ahead(files, workers, ahead=max(2 * batch_size, 8)):
        bar.update(1)
        if isinstance(image, str):
            skipped[str(path)] = image
            log.warning("fid-stats: skipping %s (%s)", path, image)
            continue
        bucket = buckets.setdefault(image.shape, [])
        bucket.append(image)
        if len(bucket) >= batch_size:
            flush(image.shape)
    for shape in list(buckets):
        flush(shape)
    bar.close()

    if skipped:
        log.warning("fid-stats: skipped %d unreadable file(s) of %d", len(skipped), len(files))
    stats = metric.stats()
    saved = save_stats(out_path, stats.mu, stats.sigma, stats.count)
    return FolderStats(stats, saved, skipped)
