"""The README's whole-photo examples, made by a command (`python -m lightning_dr2 demo --render-examples
docs/images/`), never pasted by hand: the two photos with a face that ship inside installed packages,
restored with the demo's default method, as input | DR2 | restored, with the face enlarged below."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from lightning_dr2.demo.handler import DemoSession
from lightning_dr2.image_io import images_to_tensor
from lightning_dr2.report import save_grid

EXAMPLE_PHOTOS = ("astronaut", "grace_hopper")  # scikit-image's astronaut.png, matplotlib's grace_hopper.jpg
ZOOM_MARGIN = 0.6  # the enlarged view: the face box grown by this fraction of its size on each side
TILE = 384  # the long side of each tile: six of them make a README picture of about 1 MB


@dataclass
class Example:
    name: str
    path: Path  # the PNG written
    status: str  # the demo's status line for it (faces, models, settings, seconds)


def face_zoom(images: list[np.ndarray], box: tuple[float, float, float, float]) -> list[np.ndarray]:
    """Each image cropped around `box` (grown by ZOOM_MARGIN, the photo's aspect ratio) and resized to the
    photo's size (bicubic), so the zoom tiles line up with the photos in one grid."""
    h, w = images[0].shape[:2]
    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0) * (1 + 2 * ZOOM_MARGIN)
    cw, ch = (side, side * h / w) if w <= h else (side * w / h, side)
    cw, ch = min(cw, w), min(ch, h)
    left = min(max((x0 + x1 - cw) / 2, 0), w - cw)
    top = min(max((y0 + y1 - ch) / 2, 0), h - ch)
    crop = (round(left), round(top), round(left + cw), round(top + ch))
    return [np.asarray(Image.fromarray(im).crop(crop).resize((w, h), Image.BICUBIC)) for im in images]


def tile_size(shape: tuple[int, ...]) -> tuple[int, int]:
    """(width, height) of a tile for an image of `shape` (H, W, ...): the long side TILE, the aspect kept."""
    h, w = shape[:2]
    scale = TILE / max(h, w)
    return round(w * scale), round(h * scale)


def render_examples(
    session: DemoSession, out_dir: str | os.PathLike, names: tuple[str, ...] = EXAMPLE_PHOTOS
) -> list[Example]:
    """Restore each packaged photo with the session's default method and write `<out_dir>/demo_<name>.png`."""
    from lightning_dr2.jobs.face_benchmark import packaged_photo  # scikit-image for the astronaut

    out_dir = Path(out_dir)
    examples = []
    for name in names:
        photo = packaged_photo(name)
        result = session.restore(photo, None)
        if not result.ok:
            raise RuntimeError(f"the demo could not restore the packaged photo {name!r}: {result.status}")
        tiles = [photo, result.dr2 if result.dr2 is not None else photo, result.restored]
        size = tile_size(photo.shape)
        rows = [
            np.asarray(Image.fromarray(t).resize(size, Image.BICUBIC))
            for t in tiles + face_zoom(tiles, result.faces[0].box)
        ]
        path = save_grid(images_to_tensor(rows), out_dir / f"demo_{name}.png", nrow=3)
        examples.append(Example(name, path, result.status))
    return examples
