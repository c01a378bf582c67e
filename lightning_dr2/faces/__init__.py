"""Faces in whole photos: detection + 5 landmarks behind one interface, FFHQ alignment, paste-back.

    from lightning_dr2.faces import FaceConfig, face_detector, restore_photo
    detector = face_detector(FaceConfig())                     # offline default: dlib HOG + landmarks
    out, faces = restore_photo(photo, detector, restore_fn, 512)  # restore_fn: aligned crops -> crops

docs/faces.md describes the detectors (and how good the offline one is), alignment and paste-back.
"""

from lightning_dr2.faces.align import FFHQ_TEMPLATE_512, align_face, ffhq_template, similarity_to_template, warp_face
from lightning_dr2.faces.config import FaceConfig, check_face_config
from lightning_dr2.faces.detection import DEFAULT_DETECTOR, DETECTORS, build_detector
from lightning_dr2.faces.face import Face, FaceDetector
from lightning_dr2.faces.paste import bicubic_upsampler, crop_mask, paste_faces
from lightning_dr2.faces.photo import (
    AlignedFace,
    PhotoFaces,
    face_detector,
    find_faces,
    paste_back,
    restore_photo,
    tensor_restorer,
)

__all__ = [
    "DEFAULT_DETECTOR",
    "DETECTORS",
    "FFHQ_TEMPLATE_512",
    "AlignedFace",
    "Face",
    "FaceConfig",
    "FaceDetector",
    "PhotoFaces",
    "align_face",
    "bicubic_upsampler",
    "build_detector",
    "check_face_config",
    "crop_mask",
    "face_detector",
    "ffhq_template",
    "find_faces",
    "paste_back",
    "paste_faces",
    "restore_photo",
    "similarity_to_template",
    "tensor_restorer",
    "warp_face",
]
