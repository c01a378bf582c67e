"""Image folders, synthetic faces and DataModules (see `images`, `synthetic`, `datamodule`).

Finding, decoding and encoding images is `lightning_dr2.image_io`'s job.

Re-exports resolve lazily (PEP 562), so `python -m lightning_dr2 synth` and worker processes that only
need `synthetic` do not pay for importing PyTorch Lightning and albumentations.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_EXPORTS = {
    "FaceDataModule": "datamodule",
    "ImageFolder": "images",
    "scan": "images",
    "generate_faces": "synthetic",
    "render_face": "synthetic",
}
__all__ = [
    "FaceDataModule",
    "ImageFolder",
    "generate_faces",
    "render_face",
    "scan",
]

if TYPE_CHECKING:
    from .datamodule import FaceDataModule
    from .images import ImageFolder, scan
    from .synthetic import generate_faces, render_face


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
