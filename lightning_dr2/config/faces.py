"""The `faces.*` keys of `restore mode=photos`: `faces.config.FaceConfig` held by the restore schema, checked
with the faces layer's own rules so a bad value fails when the config is loaded, naming the key."""

from __future__ import annotations

from lightning_dr2.config.loader import Checks
from lightning_dr2.faces.config import FaceConfig, face_config_problems

RESTORE_MODES = ("images", "photos")  # images: aligned faces (default); photos: detect, align, paste back


def check_faces(c: Checks, prefix: str = "faces.") -> None:
    """Fail on the first out-of-range `faces.*` value (its key, value and the requirement)."""
    face = FaceConfig(**c.value(prefix.rstrip(".")))
    for key, need in face_config_problems(face)[:1]:
        c.fail(prefix + key, getattr(face, key), need)
