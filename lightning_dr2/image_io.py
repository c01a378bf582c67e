"""The one home of image I/O: decode/encode, image <-> tensor conversion, resizing, output names.

Real datasets (FFHQ scrapes, CelebA, WIDER crops) contain odd files: grayscale or palette images,
alpha channels, 16-bit PNGs, CMYK JPEGs, rotated phone photos, and the occasional corrupt, truncated or
empty file. `read_image` turns those into plain HxWx3 uint8 RGB or a `BadImageError` naming the file,
so a bad file costs a logged skip instead of a crashed run or a silently wrong tensor.

Images are written through `files.atomic_write`, like every file of the framework.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFile, ImageOps

from lightning_dr2.files import atomic_write

log = logging.getLogger(__name__)

# RGBA and other alpha images are composited on this colour rather than having alpha dropped: dropping
# alpha exposes whatever colour the editor left under transparent pixels (often black or garbage).
ALPHA_BACKGROUND = (255, 255, 255)

# Fixed PNG options: the same pixels always give the same bytes (OpenCV writes no time or text chunks).
PNG_COMPRESSION = 3

_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


# ------------------------------------------------------------------------------------------ writing


def output_name(rel: str) -> str:
    """Outputs are PNG whatever the input format: `a/b.jpg` -> `a/b.png`."""
    return str(Path(rel).with_suffix(".png"))


def encode_png(rgb: np.ndarray) -> bytes:
    """HxWx3 uint8 RGB -> PNG bytes with fixed options: equal pixels always give equal bytes."""
    ok, buffer = cv2.imencode(
        ".png", np.ascontiguousarray(rgb[..., ::-1]), [int(cv2.IMWRITE_PNG_COMPRESSION), PNG_COMPRESSION]
    )
    if not ok:
        raise OSError(f"OpenCV could not PNG-encode a {rgb.shape} image")
    return buffer.tobytes()


def write_png(path: str | os.PathLike, rgb: np.ndarray) -> Path:
    """HxWx3 uint8 RGB as a PNG file, written atomically."""
    return atomic_write(path, encode_png(rgb))


# ------------------------------------------------------------------------------------------ reading


class BadImageError(Exception):
    """A file that cannot be decoded into an RGB image (corrupt, truncated, empty, unsupported)."""

    def __init__(self, path: str | os.PathLike, reason: str):
        super().__init__(str(path), reason)  # args stay (path, reason) so the error pickles across workers
        self.path = str(path)
        self.reason = reason

    def __str__(self) -> str:
        return f"bad image {self.path}: {self.reason}"


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


JPEG_MAGIC = b"\xff\xd8\xff"


def read_jpeg_gray(path: str | os.PathLike) -> np.ndarray | None:
    """A JPEG file's HxW uint8 gray exactly as `cv2.imread(path, cv2.IMREAD_GRAYSCALE)` decodes it (libjpeg's
    luminance, no RGB round trip; EXIF orientation applied, as `read_image` does); None for other formats,
    whose gray the identity metric reproduces from RGB. The identity-distance scripts read images this way."""
    with open(path, "rb") as fh:
        if fh.read(len(JPEG_MAGIC)) != JPEG_MAGIC:
            return None
    gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if gray is None:
        raise BadImageError(Path(path), "OpenCV could not decode this JPEG to gray")
    return gray


# ----------------------------------------------------------------------------- conversion, resizing


def image_to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 RGB -> (3, H, W) float32 in [-1, 1] (a copy: safe for read-only arrays)."""
    return torch.from_numpy(np.array(rgb)).permute(2, 0, 1).float().div_(127.5).sub_(1.0)


def read_image_tensor(path: str | os.PathLike) -> torch.Tensor:
    """`read_image` as a (3, H, W) float tensor in [-1, 1]."""
    return image_to_tensor(read_image(path))


def images_to_tensor(images: Sequence[np.ndarray]) -> torch.Tensor:
    """uint8 HxWx3 RGB arrays (all the same size) -> (B, 3, H, W) float in [-1, 1]."""
    batch = np.stack([np.asarray(im) for im in images])
    if batch.dtype != np.uint8 or batch.ndim != 4 or batch.shape[-1] != 3:
        raise ValueError(f"expected uint8 HxWx3 RGB images of one size, got array {batch.dtype} {batch.shape}")
    return torch.from_numpy(batch).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def checked_value_range(value_range: Sequence[float]) -> tuple[float, float]:
    """(low, high) of an image value range, as floats; anything else is an error naming what was given."""
    if len(value_range) != 2 or not float(value_range[1]) > float(value_range[0]):
        raise ValueError(f"value_range must be (low, high) with low < high, got {tuple(value_range)}")
    return float(value_range[0]), float(value_range[1])


def to_uint8(images: torch.Tensor, value_range: Sequence[float] = (-1.0, 1.0)) -> torch.Tensor:
    """Quantise float images to uint8 the way BasicSR's `tensor2img` does before saving a PNG.

    clamp to `value_range`, map to [0, 1], multiply by 255 and round (half to even), all in float32.
    Non-finite values raise: a NaN would otherwise become an arbitrary byte and a silently wrong score.
    """
    low, high = checked_value_range(value_range)
    x = images.detach().float()
    if not bool(torch.isfinite(x).all()):
        raise ValueError("images contain NaN or inf; cannot quantise them to uint8")
    x = (x.clamp(low, high) - low) / (high - low)
    return (x * 255.0).round().to(torch.uint8)


def to_uint8_images(x: torch.Tensor) -> list[np.ndarray]:
    """(B, 3, H, W) in [-1, 1] -> uint8 HxWx3 arrays: the bytes a PNG holds are exactly what metrics score."""
    return list(to_uint8(x).permute(0, 2, 3, 1).cpu().numpy())


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bicubic resize of a batch to size x size, antialiased when downscaling (no-op at that size)."""
    if tuple(x.shape[-2:]) == (size, size):
        return x
    down = x.shape[-1] > size or x.shape[-2] > size
    return F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False, antialias=down)


SQUARE_POLICIES = ("center_crop", "pad", "stretch")


def fit_square(x: torch.Tensor, policy: str) -> torch.Tensor:
    """Make a (C, H, W) image square before it is resized to a network's square input.

    center_crop keeps the short side (the face's aspect ratio); pad replicates the border up to the long
    side (nothing lost); stretch leaves the image as it is and the resize distorts it.
    """
    if policy not in SQUARE_POLICIES:
        raise ValueError(f"input_policy must be one of {SQUARE_POLICIES}, got {policy!r}")
    h, w = x.shape[-2:]
    if h == w or policy == "stretch":
        return x
    if policy == "center_crop":
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        return x[..., top : top + side, left : left + side]
    dh, dw = max(h, w) - h, max(h, w) - w
    padded = F.pad(x[None], (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2), mode="replicate")
    return padded[0]


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


IMAGE_EXTENSIONS: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"})
"""Suffixes (lower case) that `list_images` picks up; matching ignores case."""


def _extensions_text() -> str:
    return ", ".join(sorted(IMAGE_EXTENSIONS))


@dataclass
class FolderListing:
    """The files under a folder: images `list_images` picks up, and the other (non-hidden) files, both sorted
    by relative path; `skipped` are the folders a caller's `skip_folder` left out."""

    images: list[Path]
    others: list[Path]
    skipped: list[Path]


def walk_folder(root: str | os.PathLike, skip_folder: Callable[[Path], bool] | None = None) -> FolderListing:
    """Every non-hidden file under `root` (recursively), split into images (by `IMAGE_EXTENSIONS`) and others.

    Hidden files and folders (names starting with '.', e.g. macOS `._x.png` resource forks or
    `.ipynb_checkpoints`) are skipped; symlinked folders are followed once; folders for which `skip_folder`
    is true (e.g. an earlier job's outputs) are not entered. Sorting by relative POSIX path keeps the order,
    and therefore seeded splits, identical across machines and file systems.
    """
    root = Path(root)
    if root.is_file():
        raise NotADirectoryError(f"image folder {root} is a file, not a folder")
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist")

    def fail(err: OSError) -> None:
        raise PermissionError(f"cannot read folder {err.filename} under image folder {root}: {err.strerror}")

    images: list[tuple[str, Path]] = []
    others: list[tuple[str, Path]] = []
    skipped: list[Path] = []
    visited: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, onerror=fail, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in visited:  # a symlink cycle: do not descend twice
            dirnames[:] = []
            continue
        visited.add(real)
        if skip_folder is not None and skip_folder(Path(dirpath)):
            skipped.append(Path(dirpath))
            dirnames[:] = []
            continue
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if name.startswith("."):
                continue
            path = Path(dirpath, name)
            kind = images if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS else others
            kind.append((path.relative_to(root).as_posix(), path))
    return FolderListing(
        [p for _, p in sorted(images, key=lambda item: item[0])],
        [p for _, p in sorted(others, key=lambda item: item[0])],
        sorted(skipped),
    )


def list_images(root: str | os.PathLike) -> list[Path]:
    """All image files under `root` (recursively), sorted by their POSIX relative path (see `walk_folder`);
    a folder without any is an error naming it and the extensions looked for."""
    listing = walk_folder(root)
    if not listing.images:
        other = f" ({len(listing.others)} other files found)" if listing.others else ""
        raise ValueError(f"no image files in folder {root}{other}; looked for extensions {_extensions_text()}")
    return listing.images


def not_an_image_reason(path: Path) -> str:
    """Why a file `walk_folder` found is not used as an image (for the lists of unusable inputs)."""
    suffix = path.suffix.lower() or "no extension"
    return f"not an image file this job reads ({suffix}; it reads {_extensions_text()}): convert it to PNG"
