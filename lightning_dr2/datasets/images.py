"""Folders of face images: listing, robust decoding, and a square-crop `ImageFolder` dataset.

Real datasets (FFHQ scrapes, CelebA, WIDER crops) contain odd files: grayscale or palette images,
alpha channels, 16-bit PNGs, CMYK JPEGs, rotated phone photos, and the occasional corrupt, truncated or
empty file. Everything here turns those into plain HxWx3 uint8 RGB or a `BadImageError` naming the file,
so a bad file costs a logged skip instead of a crashed run or a silently wrong tensor.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import albumentations as A
import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from lightning_dr2.parallel import spawn_pool

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"})
"""Suffixes (lower case) that `list_images` picks up; matching ignores case."""

# RGBA and other alpha images are composited on this colour rather than having alpha dropped: dropping
# alpha exposes whatever colour the editor left under transparent pixels (often black or garbage).
ALPHA_BACKGROUND = (255, 255, 255)

_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


class BadImageError(Exception):
    """A file that cannot be decoded into an RGB image (corrupt, truncated, empty, unsupported)."""

    def __init__(self, path: str | os.PathLike, reason: str):
        super().__init__(str(path), reason)  # args stay (path, reason) so the error pickles across workers
        self.path = str(path)
        self.reason = reason

    def __str__(self) -> str:
        return f"bad image {self.path}: {self.reason}"


def _extensions_text() -> str:
    return ", ".join(sorted(IMAGE_EXTENSIONS))


def list_images(root: str | os.PathLike) -> list[Path]:
    """All image files under `root` (recursively), sorted by their POSIX relative path.

    Sorting by relative path keeps the order, and therefore seeded splits, identical across machines
    and filesystems. Hidden files and folders (names starting with '.', e.g. macOS `._x.png` resource
    forks or `.ipynb_checkpoints`) are skipped; symlinked folders are followed once.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist or is not a folder")

    def fail(err: OSError) -> None:
        raise PermissionError(f"cannot read folder {err.filename} under image folder {root}: {err.strerror}")

    found: list[tuple[str, Path]] = []
    n_other = 0
    visited: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, onerror=fail, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in visited:  # a symlink cycle: do not descend twice
            dirnames[:] = []
            continue
        visited.add(real)
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if name.startswith("."):
                continue
            if os.path.splitext(name)[1].lower() not in IMAGE_EXTENSIONS:
                n_other += 1
                continue
            path = Path(dirpath, name)
            found.append((path.relative_to(root).as_posix(), path))
    if not found:
        other = f" ({n_other} other files found)" if n_other else ""
        raise ValueError(f"no image files in folder {root}{other}; looked for extensions {_extensions_text()}")
    found.sort(key=lambda item: item[0])
    return [path for _, path in found]


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode we accept to 8-bit RGB (see `read_image` for the rules)."""
    if img.mode in _SIXTEEN_BIT_MODES or img.mode == "I":
        values = np.asarray(img).astype(np.float64)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise ValueError(f"{img.mode} image with values outside 0..65535")
        # Scale 0..65535 onto 0..255 (x / 257) instead of letting PIL clip everything above 255 to white.
        gray = np.rint(values / 257.0).astype(np.uint8)
        return Image.fromarray(gray, "L").convert("RGB")
    if img.mode == "F":
        raise ValueError("floating-point (mode F) images are not supported")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*ALPHA_BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    # L, 1, CMYK (naive conversion, no ICC profile), YCbCr, RGBX, RGB.
    return img.convert("RGB")


def _exif_transpose(img: Image.Image, path: Path) -> Image.Image:
    """Apply the EXIF orientation; a malformed EXIF block costs a warning, not the (decodable) image."""
    try:
        return ImageOps.exif_transpose(img)
    except Exception as err:
        log.warning("ignoring unreadable EXIF orientation of %s (%s: %s)", path, type(err).__name__, err)
        return img


def load_pil(path: str | os.PathLike) -> Image.Image:
    """Fully decode `path` into an 8-bit RGB PIL image, or raise `BadImageError`."""
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        # Some libraries flip this global; then truncated files decode with grey fill and no error.
        warnings.warn("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True: truncated images go undetected", stacklevel=2)
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise BadImageError(path, "empty file (0 bytes)")
        with Image.open(path) as img:
            img.load()  # Image.open is lazy: decode now so corrupt and truncated data raise here
            return _to_rgb(_exif_transpose(img, path))
    except BadImageError:
        raise
    except FileNotFoundError:
        raise BadImageError(path, "file not found") from None
    except Exception as err:  # PIL raises OSError, SyntaxError, struct.error, ... for broken data
        raise BadImageError(path, f"{type(err).__name__}: {err}") from err


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as an HxWx3 uint8 RGB array.

    Grayscale, 1-bit and palette images are expanded to RGB; images with alpha (RGBA, LA, palette with
    transparency) are composited on white (`ALPHA_BACKGROUND`), not alpha-dropped; 16-bit images are
    scaled to 8 bits (65535 -> 255, 32768 -> 128) instead of clipped (32-bit integer images are taken as
    16-bit data; float images are rejected); CMYK is converted naively (no ICC);
    the EXIF orientation tag is applied. Corrupt, truncated, empty or unsupported files raise
    `BadImageError(path, reason)`.
    """
    return np.asarray(load_pil(path))


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


def image_to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 RGB -> (3, H, W) float32 in [-1, 1] (a copy: safe for read-only arrays)."""
    return torch.from_numpy(np.array(rgb)).permute(2, 0, 1).float().div_(127.5).sub_(1.0)


def center_crop_resize(img: Image.Image, size: int) -> Image.Image:
    """Center-crop to a square (the short side) and resize to `size` x `size`.

    PIL's BICUBIC resize is antialiased (its kernel widens with the downscale factor), and
    `reducing_gap=2.0` first box-averages by an integer factor, which is faster for 1024 -> 64 with no
    visible difference. Box reduction followed by bicubic is also guided-diffusion's preprocessing, i.e.
    what the published ADM/DR2 FFHQ checkpoints saw in training.
    """
    w, h = img.size
    if w != h:
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        img = img.crop((left, top, left + side, top + side))
    if img.size != (size, size):
        img = img.resize((size, size), Image.BICUBIC, reducing_gap=2.0)
    return img


class ImageFolder(Dataset):
    """Square face images from a folder as {"image": (3, size, size) float in [-1, 1], "index", "path"}.

    A file that fails to decode is logged, remembered in `bad_files` and replaced by the next readable
    file (index + 1, + 2, ... wrapping), so one broken file does not stop a long run and the substitute
    is the same on every epoch and rank. `index`/`path` in the item name the file actually returned.
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
        """`dataset[i]`, or `dataset[(i, flip)]` as `EpochSampler` yields: the sampler decides the flip, so
        augmentation is a pure function of (seed, epoch, position), identical across worker counts and
        after a resume. A plain index flips with probability 1/2 from torch's RNG when `flip` is on."""
        if isinstance(key, tuple):
            index, flip = int(key[0]), bool(key[1]) and self.flip
        else:
            index, flip = int(key), self.flip and bool(torch.randint(2, ()).item())
        n = len(self.files)
        for step in range(n):
            i = (index + step) % n
            path = str(self.files[i])
            if path in self.bad_files:
                continue
            try:
                arr = self._load(i, flip)
            except BadImageError as err:
                self.bad_files.add(path)
                log.warning("skipping %s (%d bad so far in this process)", err, len(self.bad_files))
                continue
            return {"image": image_to_tensor(arr), "index": i, "path": path}
        raise RuntimeError(
            f"none of the {n} image files in {self.root} could be decoded; run "
            "`lightning_dr2.datasets.scan` on the folder to list the reasons"
        )

    def validate(self, workers: int = 0, progress: bool = True) -> dict[str, str]:
        """Decode every file now; return {path: reason} for the bad ones and remember them in `bad_files`."""
        bad = scan(self.files, workers=workers, progress=progress)
        self.bad_files.update(bad)
        return bad
