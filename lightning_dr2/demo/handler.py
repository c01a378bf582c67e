"""The demo's request handler, without the web page: an upload, a method and (N, tau) in; the input with its
faces marked, the DR2 output, the restored image and a status line out.

Every failure a user can cause (no file, a file that is not an image, no face found, a bad N or tau, a
missing weight file) comes back as a `DemoResult` whose status says what went wrong and what to do; the page
shows it as a message, never as a traceback.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
from PIL import Image

from lightning_dr2.config.loader import ConfigError
from lightning_dr2.config.sets import demo_settings
from lightning_dr2.demo.models import DemoMethod, DemoModels
from lightning_dr2.demo.runner import LoadedMethod, load_method
from lightning_dr2.dr2.pipeline import DR2E
from lightning_dr2.faces import FaceConfig, PhotoFaces, face_detector, find_faces, paste_back
from lightning_dr2.faces.face import Face, FaceDetector, check_photo
from lightning_dr2.image_io import BadImageError, center_crop_resize, read_image
from lightning_dr2.nets.loading import WeightsError

log = logging.getLogger(__name__)

KEPT = (40, 220, 60)  # box colour of the faces that were restored (RGB)
SKIPPED = (255, 150, 0)  # faces detected but too small (or not the largest with select=largest)
LANDMARK = (255, 40, 40)
DEFAULT_SETTING = demo_settings()[0]  # the DR2 demo's (N, tau) = (4, 22)
USER_ERRORS = (BadImageError, ConfigError, WeightsError, FileNotFoundError, ValueError, ImportError)


@dataclass
class DemoResult:
    """What the page shows: images (uint8 RGB, None when there is none) and the status line."""

    status: str
    ok: bool = False
    annotated: np.ndarray | None = None  # the input with the detected faces boxed and their landmarks
    dr2: np.ndarray | None = None  # DR2's output (pasted back into the photo); None for a baseline
    restored: np.ndarray | None = None
    faces: list[Face] = field(default_factory=list)  # the faces restored, largest first (photos only)


def mark_faces(photo: np.ndarray, kept: list[Face], skipped: list[Face]) -> np.ndarray:
    """A copy of `photo` with each face's box (numbered, largest first) and its 5 landmarks drawn."""
    out = np.ascontiguousarray(photo).copy()
    line = max(1, round(max(photo.shape[:2]) / 300))
    for number, (face, colour) in enumerate([(f, KEPT) for f in kept] + [(f, SKIPPED) for f in skipped], 1):
        x0, y0, x1, y1 = (round(v) for v in face.box)
        cv2.rectangle(out, (x0, y0), (x1, y1), colour, line, cv2.LINE_AA)
        cv2.putText(out, str(number), (x0 + line, max(y0 - 2 * line, 10 * line)), 0, 0.4 * line, colour, line)
        for x, y in face.landmarks:
            cv2.circle(out, (round(x), round(y)), line + 1, LANDMARK, -1, cv2.LINE_AA)
    return out


def _faces_line(found: PhotoFaces, min_face_px: int) -> str:
    detected = len(found.faces) + len(found.too_small) + found.not_selected
    parts = [f"{detected} face{'s' if detected != 1 else ''} found", f"{len(found.faces)} restored"]
    if found.too_small:
        parts.append(f"{len(found.too_small)} skipped (smaller than {min_face_px} px)")
    if found.not_selected:
        parts.append(f"{found.not_selected} skipped (not the largest)")
    return ", ".join(parts)


class DemoSession:
    """The page's state: the models found, the methods loaded so far (each once) and the face detector."""

    def __init__(self, models: DemoModels, device: str | torch.device = "cpu", faces: FaceConfig | None = None) -> None:
        self.models = models
        self.device = torch.device(device)
        self.faces = faces or FaceConfig()
        self._loaded: dict[DemoMethod, LoadedMethod] = {}
        self._detector: FaceDetector | None = None

    @property
    def detector(self) -> FaceDetector:
        if self._detector is None:
            self._detector = face_detector(self.faces, self.device)
        return self._detector

    def loaded(self, method: DemoMethod) -> LoadedMethod:
        if method not in self._loaded:
            self._loaded[method] = load_method(method, self.device)
        return self._loaded[method]

    def restore(
        self,
        image: str | os.PathLike | np.ndarray | None,
        label: str | None,
        N: int = DEFAULT_SETTING.N,  # noqa: N803
        tau: int = DEFAULT_SETTING.tau,
        aligned: bool = False,
    ) -> DemoResult:
        """Restore an uploaded photo (faces detected, aligned, restored, pasted back) or an aligned face."""
        start = time.perf_counter()
        try:
            if image is None:
                return DemoResult("Upload a photo or an aligned face first.")
            if not self.models.methods:
                return DemoResult(self.models.notice)
            method = self.models.method(label) if label else self.models.methods[0]
            rgb = check_photo(image) if isinstance(image, np.ndarray) else read_image(image)
            loaded = self.loaded(method)
            # Sliders send floats; a bad N or tau is an error here, before any work.
            setting = loaded.setting(int(N), int(tau)) if method.is_dr2 else None
            result = self._restore_face(rgb, loaded, setting) if aligned else self._restore_photo(rgb, loaded, setting)
        except USER_ERRORS as err:
            return DemoResult(f"Error: {err}")
        except Exception as err:  # the page shows a message; the terminal keeps the traceback
            log.exception("demo request failed")
            return DemoResult(f"Unexpected error ({type(err).__name__}: {err}); the terminal shows the details.")
        if result.ok:
            dr2 = f" | N={setting.N}, tau={setting.tau}, omega={setting.omega_value}" if setting is not None else ""
            result.status += (
                f" | {method.label}: {method.files()}{dr2} | {time.perf_counter() - start:.1f} s on {self.device.type}"
            )
        return result

    def _restore_photo(self, photo: np.ndarray, loaded: LoadedMethod, setting: DR2E | None) -> DemoResult:
        found = find_faces(photo, self.detector, loaded.crop_size, self.faces)
        marked = mark_faces(photo, [a.face for a in found.faces], found.too_small)
        faces = _faces_line(found, self.faces.min_face_px)
        if not found.faces:
            h, w = photo.shape[:2]
            hint = " (none large enough)" if found.too_small else ""
            return DemoResult(
                f"No face to restore in this {w}x{h} photo{hint}: {faces}. Detector: {self.detector.name}. "
                "If the upload is an aligned face crop, tick 'aligned face'.",
                annotated=marked,
            )
        out = loaded.run([a.crop for a in found.faces], setting)
        restored = paste_back(found, out.restored, self.faces)
        dr2 = paste_back(found, out.dr2, self.faces) if out.dr2 is not None else None
        return DemoResult(faces, True, marked, dr2, restored, [a.face for a in found.faces])

    def _restore_face(self, face: np.ndarray, loaded: LoadedMethod, setting: DR2E | None) -> DemoResult:
        h, w = face.shape[:2]
        crop = np.asarray(center_crop_resize(Image.fromarray(face), loaded.crop_size))
        out = loaded.run([crop], setting)
        shape = "" if h == w else f", centre-cropped to {min(h, w)}x{min(h, w)}"
        status = f"aligned face {w}x{h}{shape}, fed at {loaded.crop_size}x{loaded.crop_size}"
        return DemoResult(status, True, face, None if out.dr2 is None else out.dr2[0], out.restored[0])
