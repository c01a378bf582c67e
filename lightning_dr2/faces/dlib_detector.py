"""The offline default detector: dlib's HOG (or MMOD CNN) face detector + its 68-point landmark model.

Everything comes from registry packages, nothing is downloaded at run time: `dlib-bin` (dlib compiled,
wheels for CPython 3.10-3.15 on Linux x86_64/aarch64, macOS arm64, Windows) ships the HOG detector inside
the library; `face-recognition-models` ships `mmod_human_face_detector.dat` and
`shape_predictor_68_face_landmarks.dat`. The 68 iBUG points give the FFHQ 5: the mean of each eye's six
contour points, the nose tip (point 30), the mouth corners (48, 54). docs/faces.md has the measured
detection rate, landmark error and speed.

Large photos are detected on a copy whose long side is at most `max_side` (HOG time grows with the pixel
count); landmarks are always fitted on the full-resolution photo.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np

from lightning_dr2.faces.face import Face, check_photo, sort_faces

MODELS_PACKAGE = "face_recognition_models"
LANDMARK_MODEL = "shape_predictor_68_face_landmarks.dat"
MMOD_MODEL = "mmod_human_face_detector.dat"
KINDS = ("hog", "mmod")

# Score thresholds, on each detector's own scale (HOG: SVM margin; MMOD: CNN confidence). Measured on the
# packaged photos and composites (docs/faces.md): the one HOG false positive seen (a patch on the
# astronaut's suit, upsampled) scored 0.12; true faces score >= 0.4.
DEFAULT_THRESHOLDS = {"hog": 0.3, "mmod": 0.5}


class FaceModelsMissingError(ImportError):
    """dlib or the face-recognition-models data package is not installed."""


def _import_dlib():
    try:
        import dlib
    except ImportError as err:
        raise FaceModelsMissingError(
            "the offline face detector needs dlib: pip install 'dlib-bin>=20,<21' (a wheel with dlib compiled; "
            "part of lightning_dr2's dependencies), or choose faces.detector=retinaface_resnet50"
        ) from err
    return dlib


def models_dir() -> Path:
    """Folder of the face-recognition-models data files (found without importing the package, whose
    __init__ needs setuptools' pkg_resources)."""
    spec = importlib.util.find_spec(MODELS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FaceModelsMissingError(
            "the offline face detector needs the dlib model files of the 'face-recognition-models' package: "
            "pip install 'face-recognition-models==0.3.0' (part of lightning_dr2's dependencies)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "models"


def _model_file(name: str) -> str:
    path = models_dir() / name
    if not path.is_file():
        raise FaceModelsMissingError(
            f"{path} is missing: reinstall it with pip install --force-reinstall face-recognition-models==0.3.0"
        )
    return str(path)


def landmarks_68_to_5(points: np.ndarray) -> np.ndarray:
    """iBUG 68-point landmarks (68, 2) -> the FFHQ 5 (eye centres, nose tip, mouth corners), as seen."""
    points = np.asarray(points, np.float64)
    if points.shape != (68, 2):
        raise ValueError(f"expected (68, 2) landmarks, got {points.shape}")
    return np.stack([points[36:42].mean(0), points[42:48].mean(0), points[30], points[48], points[54]])


class DlibDetector:
    """dlib HOG ("hog", the default) or MMOD CNN ("mmod") detection + 68-point landmarks -> `Face`s.

    upsample: how many times dlib doubles the (work) image before detecting; 1 finds faces down to about
    40 px on the work image, 0 down to 80 px (4x faster). max_side: the work image's long side limit.
    """

    def __init__(
        self,
        kind: str = "hog",
        score_threshold: float | None = None,
        upsample: int = 1,
        max_side: int = 1600,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"dlib detector kind must be one of {KINDS}, got {kind!r}")
        if upsample < 0 or max_side < 64:
            raise ValueError(f"need upsample >= 0 and max_side >= 64, got upsample={upsample}, max_side={max_side}")
        dlib = _import_dlib()
        self.name = f"dlib_{kind}"
        self.kind = kind
        self.score_threshold = DEFAULT_THRESHOLDS[kind] if score_threshold is None else float(score_threshold)
        self.upsample = int(upsample)
        self.max_side = int(max_side)
        self._dlib = dlib
        self._predictor = dlib.shape_predictor(_model_file(LANDMARK_MODEL))
        if kind == "hog":
            self._hog = dlib.get_frontal_face_detector()
        else:
            self._mmod = dlib.cnn_face_detection_model_v1(_model_file(MMOD_MODEL))

    def _boxes(self, work: np.ndarray) -> list[tuple[tuple[float, float, float, float], float]]:
        """(box, score) on the work image, scores above the threshold only."""
        if self.kind == "hog":
            # adjust_threshold below ours so dlib returns every candidate we might keep
            rects, scores, _ = self._hog.run(work, self.upsample, min(self.score_threshold, 0.0))
            found = zip(rects, scores, strict=False)
        else:
            found = ((d.rect, d.confidence) for d in self._mmod(work, self.upsample))
        return [
            ((r.left(), r.top(), r.right() + 1, r.bottom() + 1), float(s))
            for r, s in found
            if s >= self.score_threshold
        ]

    def detect(self, image: np.ndarray) -> list[Face]:
        image = np.ascontiguousarray(check_photo(image))
        h, w = image.shape[:2]
        factor = min(1.0, self.max_side / max(h, w))
        work = (
            image
            if factor == 1.0
            else cv2.resize(image, (round(w * factor), round(h * factor)), interpolation=cv2.INTER_AREA)
        )
        faces = []
        for box, score in self._boxes(work):
            x0, y0, x1, y1 = (v / factor for v in box)
            rect = self._dlib.rectangle(round(x0), round(y0), round(x1) - 1, round(y1) - 1)
            shape = self._predictor(image, rect)
            points = np.array([(p.x, p.y) for p in shape.parts()], np.float64)
            faces.append(Face(box=(x0, y0, x1, y1), score=score, landmarks=landmarks_68_to_5(points)))
        return sort_faces(faces)
