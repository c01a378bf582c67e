"""The blind-face-restoration degradation model y = [(x * k_sigma) down_r + n_delta]_JPEG_q up_r.

Randomness is split in two, so that a benchmark set can be rebuilt bit for bit from its manifest:

* `DegradationSpec.sample(rng)` draws the per-image `DegradationParams` (kernel, sigmas, rotation, scale,
  noise level, JPEG quality, interpolation and a `noise_seed`);
* `degrade(image, params)` is a pure function of the image and the params: the only random step (the
  noise) draws from `np.random.default_rng(params.noise_seed)`.

`degrade_with_seed(image, spec, seed)` ties the two together from one per-image seed, and
`params.to_dict()` is what goes into a manifest.

The defaults are GFPGAN's training ranges (kernel 41, iso/aniso 50/50, sigma 0.1-10, r 0.8-8 bilinear,
delta 0-20 on the 0-255 scale, q 60-100). Differences from GFPGAN's `FFHQDegradationDataset`, on purpose:
the low-resolution size is round(H / r) (GFPGAN floors), q is an integer drawn uniformly from the
inclusive range (GFPGAN truncates a uniform float, so q = 100 never happens), and the resize back is
bicubic by default (GFPGAN: bilinear; `up_interpolation` selects).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import cv2
import numpy as np

KERNELS = ("iso", "aniso")

# Names used in configs and manifests -> OpenCV flags.
INTERPOLATIONS: dict[str, int] = {
    "bilinear": cv2.INTER_LINEAR,
    "bicubic": cv2.INTER_CUBIC,
    "area": cv2.INTER_AREA,
    "nearest": cv2.INTER_NEAREST,
}


def _real(owner: str, name: str, value: Any, *, low: float | None = None, strict: bool = False) -> float:
    """Check that `value` is a finite real number (>= or > `low`) and return it as a Python float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise ValueError(f"{owner}.{name} must be a finite real number, got {value!r}")
    value = float(value)
    if low is not None and (value <= low if strict else value < low):
        raise ValueError(f"{owner}.{name} must be {'>' if strict else '>='} {low}, got {value}")
    return value


def _integer(owner: str, name: str, value: Any, *, low: int | None = None, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{owner}.{name} must be an integer, got {value!r}")
    value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"{owner}.{name} must be in [{low}, {high}], got {value}")
    return value


def _flag(owner: str, name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):  # bool("false") is True: refuse strings and numbers
        raise ValueError(f"{owner}.{name} must be a bool, got {value!r}")
    return bool(value)


def _choice(owner: str, name: str, value: Any, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise ValueError(f"{owner}.{name} must be one of {list(allowed)}, got {value!r}")
    return str(value)


def _kernel_size(owner: str, value: Any) -> int:
    size = _integer(owner, "kernel_size", value, low=1)
    if size % 2 == 0:
        raise ValueError(f"{owner}.kernel_size must be odd (the kernel is centred on a pixel), got {size}")
    return size


def _from_dict(cls: type, data: Mapping[str, Any]) -> Any:
    """Build a dataclass from a mapping, naming unknown keys instead of raising a bare TypeError."""
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s) {unknown}; expected a subset of {sorted(names)}")
    return cls(**dict(data))


@dataclass
class DegradationParams:
    """The parameters of one degraded image: everything `degrade` needs, JSON-serialisable via `to_dict`.

    `scale` is r: the low-resolution image has round(H / r) x round(W / r) pixels. r < 1 is allowed
    (GFPGAN's range starts at 0.8, i.e. a slight upsampling); r must be positive.
    `noise_sigma` is delta on the 0-255 scale. `jpeg_quality=None` skips JPEG.
    """

    kernel: str = "iso"
    sigma_x: float = 1.0
    sigma_y: float = 1.0
    rotation: float = 0.0
    scale: float = 1.0
    noise_sigma: float = 0.0
    gray_noise: bool = False
    jpeg_quality: int | None = None
    interpolation: str = "bilinear"
    kernel_size: int = 41
    resize_back: bool = True
    up_interpolation: str = "bicubic"
    noise_seed: int | None = None

    def __post_init__(self) -> None:
        owner = "DegradationParams"
        self.kernel = _choice(owner, "kernel", self.kernel, KERNELS)
        self.kernel_size = _kernel_size(owner, self.kernel_size)
        self.sigma_x = _real(owner, "sigma_x", self.sigma_x, low=0.0, strict=True)
        self.sigma_y = _real(owner, "sigma_y", self.sigma_y, low=0.0, strict=True)
        self.rotation = _real(owner, "rotation", self.rotation)
        if self.kernel == "iso" and (self.sigma_y != self.sigma_x or self.rotation != 0.0):
            raise ValueError(
                f"{owner}.sigma_y/rotation: an 'iso' kernel needs sigma_y == sigma_x and rotation == 0, "
                f"got sigma_x={self.sigma_x}, sigma_y={self.sigma_y}, rotation={self.rotation}; "
                "use kernel='aniso'"
            )
        self.scale = _real(owner, "scale", self.scale, low=0.0, strict=True)
        self.noise_sigma = _real(owner, "noise_sigma", self.noise_sigma, low=0.0)
        self.gray_noise = _flag(owner, "gray_noise", self.gray_noise)
        if self.jpeg_quality is not None:
            self.jpeg_quality = _integer(owner, "jpeg_quality", self.jpeg_quality, low=1, high=100)
        self.interpolation = _choice(owner, "interpolation", self.interpolation, tuple(INTERPOLATIONS))
        self.up_interpolation = _choice(owner, "up_interpolation", self.up_interpolation, tuple(INTERPOLATIONS))
        self.resize_back = _flag(owner, "resize_back", self.resize_back)
        if self.noise_seed is not None:
            self.noise_seed = _integer(owner, "noise_seed", self.noise_seed, low=0)

    def to_dict(self) -> dict[str, Any]:
        """Plain Python types only, for JSON/CSV manifests."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DegradationParams:
        return _from_dict(cls, data)


@dataclass
class DegradationSpec:
    """Ranges the per-image parameters are drawn from; defaults are GFPGAN's training ranges.

    A fixed value is a range with equal ends, e.g. `scale_range=(8, 8)` for an 8x split (a single number
    is accepted too). `kernel_prob` is (P(iso), P(aniso)). `jpeg_range=None` disables JPEG.
    `gray_noise_prob` defaults to 0 as in GFPGAN (Real-ESRGAN uses 0.4).
    """

    kernel_size: int = 41
    kernel_prob: tuple[float, float] = (0.5, 0.5)
    sigma_range: tuple[float, float] = (0.1, 10.0)
    rotation_range: tuple[float, float] = (-math.pi, math.pi)
    scale_range: tuple[float, float] = (0.8, 8.0)
    noise_range: tuple[float, float] = (0.0, 20.0)
    gray_noise_prob: float = 0.0
    jpeg_range: tuple[int, int] | None = (60, 100)
    interpolations: tuple[str, ...] = ("bilinear",)
    resize_back: bool = True
    up_interpolation: str = "bicubic"

    def __post_init__(self) -> None:
        owner = "DegradationSpec"
        self.kernel_size = _kernel_size(owner, self.kernel_size)
        probs = tuple(_real(owner, "kernel_prob", p, low=0.0) for p in self._pair("kernel_prob", self.kernel_prob))
        if sum(probs) <= 0:
            raise ValueError(f"{owner}.kernel_prob must not be all zero, got {probs}")
        self.kernel_prob = (probs[0] / sum(probs), probs[1] / sum(probs))
        self.sigma_range = self._range("sigma_range", self.sigma_range, low=0.0, strict=True)
        self.rotation_range = self._range("rotation_range", self.rotation_range)
        self.scale_range = self._range("scale_range", self.scale_range, low=0.0, strict=True)
        self.noise_range = self._range("noise_range", self.noise_range, low=0.0)
        self.gray_noise_prob = _real(owner, "gray_noise_prob", self.gray_noise_prob, low=0.0)
        if self.gray_noise_prob > 1:
            raise ValueError(f"{owner}.gray_noise_prob must be in [0, 1], got {self.gray_noise_prob}")
        if self.jpeg_range is not None:
            lo, hi = self._pair("jpeg_range", self.jpeg_range)
            lo = _integer(owner, "jpeg_range", lo, low=1, high=100)
            hi = _integer(owner, "jpeg_range", hi, low=1, high=100)
            if lo > hi:
                raise ValueError(f"{owner}.jpeg_range must be (low, high) with low <= high, got {(lo, hi)}")
            self.jpeg_range = (lo, hi)
        names = (self.interpolations,) if isinstance(self.interpolations, str) else tuple(self.interpolations)
        if not names:
            raise ValueError(f"{owner}.interpolations must name at least one of {list(INTERPOLATIONS)}")
        self.interpolations = tuple(_choice(owner, "interpolations", n, tuple(INTERPOLATIONS)) for n in names)
        self.up_interpolation = _choice(owner, "up_interpolation", self.up_interpolation, tuple(INTERPOLATIONS))
        self.resize_back = _flag(owner, "resize_back", self.resize_back)

    @staticmethod
    def _pair(name: str, value: Any) -> tuple[Any, Any]:
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            return value, value
        try:
            lo, hi = value
        except (TypeError, ValueError):
            raise ValueError(f"DegradationSpec.{name} must be a number or a (low, high) pair, got {value!r}") from None
        return lo, hi

    def _range(self, name: str, value: Any, *, low: float | None = None, strict: bool = False) -> tuple[float, float]:
        lo, hi = self._pair(name, value)
        lo = _real("DegradationSpec", name, lo, low=low, strict=strict)
        hi = _real("DegradationSpec", name, hi, low=low, strict=strict)
        if lo > hi:
            raise ValueError(f"DegradationSpec.{name} must be (low, high) with low <= high, got {(lo, hi)}")
        return lo, hi

    def sample(self, rng: np.random.Generator) -> DegradationParams:
        """Draw one image's parameters.

        Every call consumes the same draws in the same order whatever the branch taken (an iso kernel
        still draws sigma_y and rotation), so changing one range does not reshuffle the others.
        """
        aniso = rng.random() < self.kernel_prob[1]
        sigma_x = rng.uniform(*self.sigma_range)
        sigma_y = rng.uniform(*self.sigma_range)
        rotation = rng.uniform(*self.rotation_range)
        scale = rng.uniform(*self.scale_range)
        interpolation = self.interpolations[int(rng.integers(len(self.interpolations)))]
        noise_sigma = rng.uniform(*self.noise_range)
        gray_noise = rng.random() < self.gray_noise_prob
        jpeg_low, jpeg_high = self.jpeg_range or (1, 100)  # drawn even when disabled: fixed draw count
        jpeg = int(rng.integers(jpeg_low, jpeg_high + 1))
        noise_seed = int(rng.integers(0, 2**31))
        return DegradationParams(
            kernel="aniso" if aniso else "iso",
            sigma_x=sigma_x,
            sigma_y=sigma_y if aniso else sigma_x,
            rotation=rotation if aniso else 0.0,
            scale=scale,
            noise_sigma=noise_sigma,
            gray_noise=gray_noise,
            jpeg_quality=jpeg if self.jpeg_range else None,
            interpolation=interpolation,
            kernel_size=self.kernel_size,
            resize_back=self.resize_back,
            up_interpolation=self.up_interpolation,
            noise_seed=noise_seed,
        )

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DegradationSpec:
        return _from_dict(cls, data)


def gaussian_kernel(size: int, sigma_x: float, sigma_y: float | None = None, rotation: float = 0.0) -> np.ndarray:
    """A normalised (sums to 1) 2-D Gaussian, float64, size x size; anisotropic when sigma_y differs.

    Written by hand because OpenCV (`cv2.getGaussianKernel`) and albumentations' functional API only
    give separable, axis-aligned kernels; a rotated anisotropic kernel is not separable. `rotation`
    (radians) turns the sigma_x axis counter-clockwise from the image x axis, as in BasicSR's
    `bivariate_Gaussian` (covariance R diag(sx^2, sy^2) R^T).
    """
    size = _kernel_size("gaussian_kernel", size)
    sigma_x = _real("gaussian_kernel", "sigma_x", sigma_x, low=0.0, strict=True)
    sigma_y = sigma_x if sigma_y is None else _real("gaussian_kernel", "sigma_y", sigma_y, low=0.0, strict=True)
    rotation = _real("gaussian_kernel", "rotation", rotation)
    half = size // 2
    ax = np.arange(-half, half + 1, dtype=np.float64)
    xx, yy = np.meshgrid(ax, ax)  # xx varies along columns (x), yy along rows (y)
    c, s = math.cos(rotation), math.sin(rotation)
    u = c * xx + s * yy  # coordinates in the kernel's principal axes: R^T [x, y]
    v = -s * xx + c * yy
    kernel = np.exp(-0.5 * ((u / sigma_x) ** 2 + (v / sigma_y) ** 2))
    return kernel / kernel.sum()  # the centre is exp(0) = 1, so the sum is never 0


def _check_image(image: Any) -> np.ndarray:
    if not isinstance(image, np.ndarray):
        raise ValueError(f"image must be a numpy array (H x W x 3 uint8 RGB), got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 (0-255 RGB), got dtype {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"image must have shape H x W x 3 (RGB), got {image.shape}")
    return image


def degrade(image: np.ndarray, params: DegradationParams, rng: np.random.Generator | None = None) -> np.ndarray:
    """Apply y = [(x * k) down_r + n]_JPEG_q up_r to one H x W x 3 uint8 RGB image; returns uint8 RGB.

    Blur, resize and noise run in float32 on [0, 1] (as GFPGAN/BasicSR do), so only the JPEG step (or the
    end) quantises. The noise comes from `rng` if given, else from `np.random.default_rng(params.noise_seed)`.
    Output size: H x W when `params.resize_back`, else round(H / r) x round(W / r).
    """
    image = _check_image(image)
    if not isinstance(params, DegradationParams):
        raise ValueError(f"params must be a DegradationParams, got {type(params).__name__}")
    height, width = image.shape[:2]
    x = image.astype(np.float32) / 255.0

    # Blur. cv2.filter2D correlates rather than convolves; the same for a centrally symmetric Gaussian.
    # BORDER_REFLECT_101 is OpenCV's default, i.e. what GFPGAN gets.
    kernel = gaussian_kernel(params.kernel_size, params.sigma_x, params.sigma_y, params.rotation)
    x = cv2.filter2D(x, -1, kernel, borderType=cv2.BORDER_REFLECT_101)

    # Down-sample by r.
    low_h, low_w = max(1, round(height / params.scale)), max(1, round(width / params.scale))
    if (low_h, low_w) != (height, width):
        x = cv2.resize(x, (low_w, low_h), interpolation=INTERPOLATIONS[params.interpolation])

    # Additive Gaussian noise, by hand: albumentations' GaussNoise draws from its own RNG and would not
    # let us record/replay the per-image draw; this is BasicSR's `generate_gaussian_noise`.
    if params.noise_sigma > 0:
        if rng is None:
            if params.noise_seed is None:
                raise ValueError("params.noise_seed is None and no rng was given: noise would not be reproducible")
            rng = np.random.default_rng(params.noise_seed)
        shape = (low_h, low_w, 1) if params.gray_noise else (low_h, low_w, 3)
        noise = rng.standard_normal(shape, dtype=np.float32) * np.float32(params.noise_sigma / 255.0)
        x = x + noise  # a (H, W, 1) gray noise broadcasts over the three channels
    out = np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)

    # JPEG with OpenCV's encoder; it expects BGR, so convert, else chroma subsampling hits the wrong channels.
    if params.jpeg_quality is not None:
        ok, buffer = cv2.imencode(
            ".jpg", cv2.cvtColor(out, cv2.COLOR_RGB2BGR), [int(cv2.IMWRITE_JPEG_QUALITY), params.jpeg_quality]
        )
        if not ok:
            raise RuntimeError(f"OpenCV could not JPEG-encode a {out.shape} image")
        out = cv2.cvtColor(cv2.imdecode(buffer, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)

    if params.resize_back and (low_h, low_w) != (height, width):
        out = cv2.resize(out, (width, height), interpolation=INTERPOLATIONS[params.up_interpolation])
    return np.ascontiguousarray(out)


def degrade_with_seed(
    image: np.ndarray, spec: DegradationSpec, seed: int | Sequence[int]
) -> tuple[np.ndarray, DegradationParams]:
    """Sample parameters from `spec` with `np.random.default_rng(seed)` and degrade `image`.

    `seed` is the per-image seed (an int, or a sequence such as (global_seed, image_index)); the same seed
    gives the same bytes on any machine, batch size or worker count. Record `params.to_dict()`:
    `degrade(image, DegradationParams.from_dict(record))` reproduces the output.
    """
    params = spec.sample(np.random.default_rng(seed))
    return degrade(image, params), params
