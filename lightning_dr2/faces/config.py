"""The face pipeline's settings (restore mode=photos): one dataclass schema, plain values, checked with
errors that name the key. The crop size is not here: it is the restoration network's input size."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from lightning_dr2.config.loader import ConfigError
from lightning_dr2.faces.detection import DETECTORS

SELECTIONS = ("all", "largest")
BACKGROUNDS = ("bicubic",)  # + restoration-network names once the registry serves upsamplers


@dataclass
class FaceConfig:
    """Detection, selection and paste-back of faces in whole photos."""

    detector: str = "dlib_hog"  # a key of faces.detection.DETECTORS
    weights: str | None = None  # RetinaFace weight file (else its registered name through the weights lookup)
    score_threshold: float | None = None  # None: the detector's own default
    min_face_px: int = 32  # faces whose aligned crop covers a smaller square of the photo are skipped, counted
    select: str = "all"  # all | largest
    upscale: int = 1  # output photo = input x upscale (background by `background`, faces restored)
    background: str = "bicubic"  # background upsampler when upscale > 1
    erode: float = 0.02  # mask: fraction of the crop side left out at its border
    feather: float = 0.06  # mask: fraction of the crop side over which it ramps from 0 to 1


def check_face_config(cfg: FaceConfig | DictConfig | dict[str, Any], prefix: str = "faces.") -> FaceConfig:
    """`cfg` as a FaceConfig with every value in range; ConfigError naming `prefix + key` otherwise."""
    try:
        node = OmegaConf.merge(OmegaConf.structured(FaceConfig), cfg)
    except Exception as err:  # unknown key or wrong type: OmegaConf names the key
        key = getattr(err, "full_key", None) or "?"
        raise ConfigError(f"invalid face config: key '{prefix}{key}': {getattr(err, 'msg', err)}") from None
    face = FaceConfig(**OmegaConf.to_container(node))  # type: ignore[arg-type]

    def require(key: str, ok: bool, need: str) -> None:
        if not ok:
            raise ConfigError(f"{prefix}{key}={getattr(face, key)!r} {need}")

    require("detector", face.detector in DETECTORS, f"must be one of {list(DETECTORS)}")
    require("select", face.select in SELECTIONS, f"must be one of {list(SELECTIONS)}")
    require("background", face.background in BACKGROUNDS, f"must be one of {list(BACKGROUNDS)}")
    require("min_face_px", face.min_face_px >= 0, "must be >= 0 (0 keeps every face)")
    require("upscale", 1 <= face.upscale <= 8, "must be a whole number from 1 to 8")
    require("erode", 0 <= face.erode < 0.25, "must be in [0, 0.25)")
    require("feather", 0 <= face.feather < 0.25, "must be in [0, 0.25)")
    require(
        "weights",
        face.weights is None or face.detector.startswith("retinaface"),
        "is only used by retinaface_* detectors",
    )
    return face


def detector_options(face: FaceConfig) -> dict[str, Any]:
    """Keyword options of `build_detector(face.detector, ...)` that this config sets."""
    options: dict[str, Any] = {}
    if face.score_threshold is not None:
        options["score_threshold"] = face.score_threshold
    if face.weights is not None:
        options["weights"] = face.weights
    return options
