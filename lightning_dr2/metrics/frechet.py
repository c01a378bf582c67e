"""Frechet distance between Gaussians fitted to features (FID), with pytorch-fid's numerics.

* `frechet_distance` is pytorch-fid's `calculate_frechet_distance` (float64, `scipy.linalg.sqrtm`, an eps
  offset on the diagonals if the product is singular, a tolerance on the imaginary part).
* `FeatureStats` accumulates mean and covariance in float64 from feature batches as sums (count, sum,
  sum of outer products): sums merge across batches and processes by plain addition (an all-reduce), so
  the result does not depend on batch size or GPU count.
* `save_stats` / `load_stats` read and write reference statistics as `.npz` (pytorch-fid: mu, sigma) or
  as BasicSR's `.pth` (`inception_FFHQ_512-f7b384ab.pth`: a torch-pickled dict with numpy 'mean', 'cov').
"""

from __future__ import annotations

import os
import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import scipy.linalg
import torch


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6
) -> float:
    """||mu1 - mu2||^2 + Tr(sigma1 + sigma2 - 2 sqrt(sigma1 sigma2)), as pytorch-fid computes it."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = (
        np.atleast_2d(np.asarray(sigma1, np.float64)),
        np.atleast_2d(np.asarray(sigma2, np.float64)),
    )
    if mu1.shape != mu2.shape:
        raise ValueError(f"mean vectors have different shapes: {mu1.shape} vs {mu2.shape}")
    if sigma1.shape != sigma2.shape or sigma1.shape != (mu1.shape[0], mu1.shape[0]):
        raise ValueError(f"covariances must both be {mu1.shape[0]}x{mu1.shape[0]}, got {sigma1.shape}, {sigma2.shape}")
    diff = mu1 - mu2
    covmean = scipy.linalg.sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        warnings.warn(f"frechet_distance: singular product of covariances; adding {eps} to the diagonals", stacklevel=2)
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):  # numerical error can leave a small imaginary component
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"frechet_distance: imaginary component {np.max(np.abs(covmean.imag))} in sqrtm")
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


class FeatureStats:
    """Streaming float64 mean/covariance of D-dimensional features; mergeable by adding sums.

    Sums live in torch float64 on the device of the first batch (so a GPU does the outer products);
    `mean()` and `cov()` return numpy float64. `cov()` is unbiased like `np.cov(x, rowvar=False)`.
    """

    def __init__(self, dim: int | None = None) -> None:
        self.dim = dim
        self.count = 0
        self.sum: torch.Tensor | None = None
        self.outer: torch.Tensor | None = None

    @classmethod
    def from_sums(cls, count: int, sum_: Any, outer: Any) -> FeatureStats:
        """Rebuild from sums, e.g. from a torchmetrics Metric's all-reduced states."""
        sum_t = torch.as_tensor(sum_, dtype=torch.float64)
        stats = cls(dim=int(sum_t.shape[0]))
        stats.count, stats.sum = int(count), sum_t
        stats.outer = torch.as_tensor(outer, dtype=torch.float64, device=sum_t.device)
        if stats.outer.shape != (stats.dim, stats.dim):
            raise ValueError(f"outer must be {stats.dim}x{stats.dim}, got {tuple(stats.outer.shape)}")
        return stats

    def update(self, features: np.ndarray | torch.Tensor) -> FeatureStats:
        """Add an N x D batch (anything reshapeable to it, e.g. N x D x 1 x 1 pool3 output)."""
        x = torch.as_tensor(features).detach()
        if x.ndim < 2:
            raise ValueError(f"features must be N x D (or N x D x 1 x 1), got shape {tuple(x.shape)}")
        x = x.reshape(x.shape[0], -1).to(torch.float64)
        if not bool(torch.isfinite(x).all()):
            raise ValueError("features contain NaN or inf")
        if self.dim is None:
            self.dim = x.shape[1]
        if x.shape[1] != self.dim:
            raise ValueError(f"features have dimension {x.shape[1]}, expected {self.dim}")
        if self.sum is None:
            self.sum = torch.zeros(self.dim, dtype=torch.float64, device=x.device)
            self.outer = torch.zeros(self.dim, self.dim, dtype=torch.float64, device=x.device)
        x = x.to(self.sum.device)
        self.sum += x.sum(dim=0)
        self.outer += x.T @ x
        self.count += x.shape[0]
        return self

    def merge(self, other: FeatureStats) -> FeatureStats:
        """Add another accumulator's sums into this one (e.g. from another process or shard)."""
        if other.count == 0:
            return self
        if self.count == 0:
            self.dim, self.count = other.dim, other.count
            self.sum, self.outer = other.sum.clone(), other.outer.clone()
            return self
        if other.dim != self.dim:
            raise ValueError(f"cannot merge feature stats of dimension {other.dim} into {self.dim}")
        self.sum += other.sum.to(self.sum.device)
        self.outer += other.outer.to(self.outer.device)
        self.count += other.count
        return self

    def mean(self) -> np.ndarray:
        if self.count == 0:
            raise ValueError("FeatureStats is empty: no features were added")
        return (self.sum / self.count).cpu().numpy()

    def cov(self) -> np.ndarray:
        if self.count < 2:
            raise ValueError(f"an unbiased covariance needs at least 2 features, got {self.count}")
        mean = self.sum / self.count
        cov = (self.outer - self.count * torch.outer(mean, mean)) / (self.count - 1)
        return cov.cpu().numpy()


class FIDStats(NamedTuple):
    """Reference statistics: mean (D,), covariance (D, D), number of images (None if the file lacks it)."""

    mu: np.ndarray
    sigma: np.ndarray
    count: int | None


def save_stats(path: str | os.PathLike, mu: np.ndarray, sigma: np.ndarray, count: int | None = None) -> Path:
    """Write `.npz` (mu, sigma, count; pytorch-fid reads it) or `.pth`/`.pt` (BasicSR's dict: mean, cov)."""
    path = Path(path)
    mu, sigma = np.asarray(mu, np.float64), np.asarray(sigma, np.float64)
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise ValueError(f"expected mu (D,) and sigma (D, D), got {mu.shape} and {sigma.shape}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".npz":
        extra = {} if count is None else {"count": np.int64(count)}
        with path.open("wb") as f:  # a file object: np.savez would otherwise append ".npz" to odd names
            np.savez(f, mu=mu, sigma=sigma, **extra)
    elif path.suffix in (".pth", ".pt"):
        torch.save({"mean": mu, "cov": sigma, "count": count}, path)
    else:
        raise ValueError(f"unknown statistics format for {path}: use a .npz or .pth file name")
    return path


def _numpy_safe_globals() -> list[Any]:
    """What a torch-pickled dict of numpy arrays needs under weights_only=True, under both numpy 1.x names
    (`numpy.core.multiarray`, in BasicSR's released file) and numpy 2.x names (`numpy._core.multiarray`)."""
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray  # type: ignore[no-redef]
    allowed: list[Any] = [np.ndarray, np.dtype]
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed += [
            (multiarray._reconstruct, f"{module}._reconstruct"),
            (multiarray.scalar, f"{module}.scalar"),
        ]
    allowed += [type(np.dtype(t)) for t in (np.float64, np.float32, np.int64)]  # numpy.dtypes.Float64DType, ...
    return allowed


def _kind(path: Path) -> str:
    with path.open("rb") as f:
        head = f.read(4)
    if head.startswith(b"PK"):
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
        if any(n.endswith(".npy") for n in names):
            return "npz"
        if any(n.endswith("data.pkl") for n in names):
            return "torch"
        return "unknown"
    if head[:1] == b"\x80":  # a pickle: torch's legacy (non-zip) format, as BasicSR saves it
        return "torch"
    return "unknown"


def load_stats(path: str | os.PathLike) -> FIDStats:
    """Read `.npz` (pytorch-fid: mu, sigma) or a torch file with a dict of mean/cov (BasicSR) or mu/sigma."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"FID statistics file not found: {path}")
    kind = _kind(path)
    if kind == "npz":
        with np.load(path, allow_pickle=False) as data:
            obj = {k: data[k] for k in data.files}
    elif kind == "torch":
        try:
            with torch.serialization.safe_globals(_numpy_safe_globals()):
                obj = torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError) as err:
            raise ValueError(
                f"could not read {path} as FID statistics (torch.load with weights_only=True failed: {err})"
            ) from err
    else:
        raise ValueError(
            f"unknown FID statistics format in {path}: expected an .npz (mu, sigma) or a torch file with a "
            "dict holding 'mean' and 'cov' (BasicSR's inception_FFHQ_512-f7b384ab.pth)"
        )
    if not isinstance(obj, dict):
        raise ValueError(f"{path} does not hold a dict of statistics (got {type(obj).__name__})")
    mu_key, sigma_key = ("mu", "sigma") if "mu" in obj else ("mean", "cov")
    if mu_key not in obj or sigma_key not in obj:
        raise ValueError(f"{path} lacks FID statistics: expected keys mu/sigma or mean/cov, found {sorted(obj)}")
    mu, sigma = (_as_float64(path, k, obj[k]) for k in (mu_key, sigma_key))
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise ValueError(f"{path}: expected mean (D,) and covariance (D, D), got {mu.shape} and {sigma.shape}")
    count = obj.get("count")
    return FIDStats(mu, sigma, None if count is None else int(count))


def _as_float64(path: Path, key: str, value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if not isinstance(value, np.ndarray):
        raise ValueError(f"{path}: '{key}' is a {type(value).__name__}, expected an array")
    return value.astype(np.float64)
