"""Image folders, synthetic faces and DataModules (see `images`, `synthetic`, `datamodule`).

Re-exports resolve lazily (PEP 562), so `python -m lightning_dr2 synth` and worker processes that only
need `synthetic` do not pay for importing PyTorch Lightning and albumentations.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_EXPORTS = {
    "FaceDataModule": "datamodule",
    "IMAGE_EXTENSIONS": "images",
    "BadImageError": "images",
    "ImageFolder": "images",
    "center_crop_resize": "images",
    "list_images": "images",
    "load_pil": "images",
    "read_image": "images",
    "scan": "images",
    "generate_faces": "synthetic",
    "render_face": "synthetic",
    "synth_main": "synthetic",
}
__all__ = [
    "BadImageError",
    "FaceDataModule",
    "IMAGE_EXTENSIONS",
    "ImageFolder",
    "center_crop_resize",
    "generate_faces",
    "list_images",
    "load_pil",
    "read_image",
    "render_face",
    "scan",
    "synth_main",
]

if TYPE_CHECKING:
    from .datamodule import FaceDataModule
    from .images import (
        IMAGE_EXTENSIONS,
        BadImageError,
        ImageFolder,
        center_crop_resize,
        list_images,
        load_pil,
        read_image,
        scan,
    )
    from .synthetic import generate_faces, render_face, synth_main


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
