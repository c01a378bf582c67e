"""`python -m lightning_dr2 restore --input PHOTOS --output OUT mode=photos`: DR2 (+ enhancer) on the faces of
whole photos, in three phases:

1. Detect and align (CPU, photo by photo): OUT/faces/<rel>.json per photo (its faces with box, landmarks,
   score, photo -> crop transform; faces skipped as too small or not the largest; a fingerprint of the photo's
   bytes and the detection settings) and OUT/crops/aligned/<rel>/face_<k>.png. A record whose fingerprint is the
   current one is reused without running the detector.
2. Restore every aligned crop of every photo as ONE predict job (`predict_engine.run_predict`: multi-GPU
   sharding, atomic writes, reuse by fingerprint): work item `<rel>/face_<k>.png`, seeded from the base seed and
   that name, written to OUT/crops/restored/ (DR2's output to OUT/dr2/), one manifest record per face.
3. Paste back (rank 0): OUT/restored/<rel>.png, each photo with its restored faces (photos without a face are
   copied through, upscaled with the background upsampler). A photo is pasted again only when its restored
   crops or the paste settings (upscale, background, erode, feather) changed.

OUT/manifest.json holds the crops' records (`images`: photo, face index, box, landmarks, score, transform, N,
tau, seed, method, fingerprint) and a `photos` list (faces found, restored, skipped; the restored photo).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from lightning_dr2.config.loader import ConfigError
from lightning_dr2.datasets.predict_inputs import RestoreInputs, WorkItems
from lightning_dr2.dr2.pipeline import DR2E, Networks
from lightning_dr2.faces.background import Background, load_background
from lightning_dr2.faces.config import FaceConfig, check_face_config
from lightning_dr2.faces.face import FaceDetector
from lightning_dr2.faces.paste import BackgroundUpsampler, paste_faces
from lightning_dr2.faces.photo import face_detector, find_faces
from lightning_dr2.files import write_json
from lightning_dr2.image_io import BadImageError, output_name, read_image, write_png
from lightning_dr2.jobs.predict_engine import checked_folders, list_inputs, resolve_accelerator, run_predict
from lightning_dr2.jobs.restore import restore_settings
from lightning_dr2.modules.predict import RestoreModule
from lightning_dr2.parallel import spawn_pool
from lightning_dr2.provenance import MANIFEST, ReuseRefused, changed_keys, fingerprint, read_manifest
from lightning_dr2.weights import sha256sum

log = logging.getLogger(__name__)

FACES_DIR = "faces"  # OUT/faces/<rel>.json: one detection record per photo
ALIGNED_DIR = "crops/aligned"
RESTORED_CROPS_DIR = "crops/restored"
PHOTOS_DIR = "restored"
DETECTION_KEYS = ("detector", "weights", "score_threshold", "min_face_px", "select")
PASTE_KEYS = ("upscale", "background", "erode", "feather")


@dataclass
class PhotosSummary:
    """What one `run_restore_photos` did (the CLI prints it)."""

    output: Path
    photos: int  # photos read (with or without faces)
    no_face: int  # photos in which no face was kept: copied through
    faces: int  # faces kept for restoration, all photos
    skipped_too_small: int
    skipped_not_largest: int
    detected: int  # photos run through the detector now (the others' records were reused)
    restored: int  # crops restored now
    reused: int  # crops finished earlier with the same fingerprint
    recomputed: int  # crops finished earlier with other settings: made again
    pasted: int  # photos pasted now (the others were finished with the same crops and paste settings)
    bad: list[tuple[str, str]]  # unusable inputs and flagged crops
    seconds: float
    earlier_outputs: list[Path] = field(default_factory=list)

    def describe(self) -> str:
        return (
            f"{self.photos} photos ({self.no_face} without a face, copied through), {self.faces} faces "
            f"({self.skipped_too_small} too small and {self.skipped_not_largest} not the largest skipped); "
            f"detected {self.detected} photos now, restored {self.restored} faces ({self.reused} reused, "
            f"{self.recomputed} made again), pasted {self.pasted} photos in {self.seconds:.1f} s -> {self.output}"
        )


def photo_key(rel: str) -> str:
    """`a/b.jpg` -> `a/b`: the name of a photo's record and of its crops' folder."""
    return output_name(rel)[: -len(".png")]


def crop_name(rel: str, index: int) -> str:
    return f"{photo_key(rel)}/face_{index}.png"


def detection_settings(face: FaceConfig, crop_size: int) -> dict[str, Any]:
    """What besides the photo's bytes decides its faces and aligned crops (the detection fingerprint)."""
    return {**{k: getattr(face, k) for k in DETECTION_KEYS}, "crop_size": crop_size}


class Detection:
    """Phase 1 for one photo at a time: its detection record, reused when its fingerprint is current; the
    detector is built only when a photo needs it (a finished re-run never loads it)."""

    def __init__(
        self, input_dir: Path, output_dir: Path, face: FaceConfig, crop_size: int, device: str = "cpu"
    ) -> None:
        self.input_dir, self.output_dir, self.face, self.crop_size = input_dir, output_dir, face, crop_size
        self.device = device  # RetinaFace's; dlib runs on the CPU
        self.settings = detection_settings(face, crop_size)
        self._detector: FaceDetector | None = None

    def record_path(self, rel: str) -> Path:
        return self.output_dir / FACES_DIR / f"{photo_key(rel)}.json"

    def earlier(self, rel: str) -> tuple[dict[str, Any] | None, tuple[str, str, str]]:
        """(the photo's finished record when its fingerprint is current and its crops exist, else None; the task
        that makes it: (rel, the photo's sha256, the current fingerprint))."""
        photo_sha = sha256sum(self.input_dir / rel)
        expected = fingerprint({**self.settings, "photo_sha256": photo_sha})
        record = _read_record(self.record_path(rel))
        if (
            record is not None
            and record.get("fingerprint") == expected
            and all((self.output_dir / ALIGNED_DIR / f["crop"]).is_file() for f in record.get("faces", []))
        ):
            return record, (rel, photo_sha, expected)
        return None, (rel, photo_sha, expected)

    def detect(self, rel: str, photo_sha: str, expected: str) -> dict[str, Any]:
        """Detect and align the photo's faces now, write its crops and record; BadImageError when it cannot be
        decoded."""
        photo = read_image(self.input_dir / rel)
        if self._detector is None:
            self._detector = face_detector(self.face, self.device)
        found = find_faces(photo, self._detector, self.crop_size, self.face)
        record = {"photo": rel, "photo_sha256": photo_sha, "fingerprint": expected}
        record.update(self.settings)
        record.update(found.manifest())
        folder = self.output_dir / ALIGNED_DIR / photo_key(rel)
        kept = set()
        for face, aligned in zip(record["faces"], found.faces, strict=True):
            face["crop"] = crop_name(rel, face["index"])
            kept.add(face["crop"])
            write_png(self.output_dir / ALIGNED_DIR / face["crop"], aligned.crop)
        for old in folder.glob("face_*.png"):  # faces of an earlier detection that are gone now
            if f"{photo_key(rel)}/{old.name}" not in kept:
                old.unlink()
        write_json(self.record_path(rel), record)
        return record

    def detect_or_bad(self, rel: str, photo_sha: str, expected: str) -> dict[str, Any] | str:
        """`detect`, or the reason the photo cannot be decoded (a string crosses process boundaries plainly)."""
        try:
            return self.detect(rel, photo_sha, expected)
        except BadImageError as err:
            return err.reason


# A photo folder needs at least this many photos to detect before phase 1 starts worker processes: starting
# them (spawn, imports) costs seconds, more than a few photos take to detect in this process.
POOL_MIN_PHOTOS = 8

_worker_detection: Detection | None = None  # one per worker process, its detector built once


def _init_worker(input_dir: Path, output_dir: Path, face: FaceConfig, crop_size: int) -> None:
    global _worker_detection
    _worker_detection = Detection(input_dir, output_dir, face, crop_size)


def _detect_in_worker(task: tuple[str, str, str]) -> dict[str, Any] | str:
    assert _worker_detection is not None
    return _worker_detection.detect_or_bad(*task)


def detect_photos(
    detection: Detection, rels: list[str], workers: int, strict: bool = False
) -> tuple[dict[str, dict[str, Any]], list[tuple[str, str]], int]:
    """Phase 1 over every photo: (records by photo, photos that cannot be decoded with the reason, number of
    photos detected now). Photos to detect are shared by `workers` processes when there are enough of them
    (`POOL_MIN_PHOTOS`) and the detector runs on the CPU; each writes its own photos' files. `strict`
    (reuse=strict): a photo detected earlier with other settings stops the job before anything is written."""
    records: dict[str, dict[str, Any]] = {}
    todo: list[tuple[str, str, str]] = []
    for rel in rels:
        finished, task = detection.earlier(rel)
        if finished is not None:
            records[rel] = finished
            continue
        earlier = _read_record(detection.record_path(rel))
        if strict and earlier is not None:
            changed = changed_keys(earlier, {**detection.settings, "photo_sha256": task[1]})
            raise ReuseRefused(
                f"reuse=strict: {detection.record_path(rel)} was detected with other settings (changed: "
                f"{', '.join(changed) or 'its crops are missing'}); use another --output, or reuse=auto to detect again"
            )
        todo.append(task)
    if workers > 0 and len(todo) >= POOL_MIN_PHOTOS and detection.device == "cpu":
        init = (detection.input_dir, detection.output_dir, detection.face, detection.crop_size)
        with spawn_pool(min(workers, len(todo)), partial(_init_worker, *init)) as pool:
            results = list(pool.map(_detect_in_worker, todo, chunksize=4))
    else:
        results = [detection.detect_or_bad(*task) for task in todo]
    bad = []
    for (rel, _, _), result in zip(todo, results, strict=True):
        if isinstance(result, str):
            bad.append((rel, result))
        else:
            records[rel] = result
    return {rel: records[rel] for rel in rels if rel in records}, bad, len(todo) - len(bad)


def _read_record(path: Path) -> dict[str, Any] | None:
    """An earlier detection record, or None when there is none or it is unreadable (then it is made again)."""
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) else None


def crop_work(records: dict[str, dict[str, Any]]) -> WorkItems:
    """Phase 2's work items: each kept face of each photo, named `<rel>/face_<k>.png` (its aligned crop's path
    under OUT/crops/aligned), with its face record (recorded in the manifest and fingerprinted)."""
    work: WorkItems = {}
    for rel, record in records.items():
        for face in record["faces"]:
            own = {"photo": rel, "face": face["index"]}
            own.update({k: face[k] for k in ("box", "landmarks", "score", "face_px", "transform")})
            work[face["crop"]] = (face["crop"], own)
    return work


def paste_photo(
    input_dir: Path,
    output_dir: Path,
    rel: str,
    record: dict[str, Any],
    crops: dict[str, dict[str, Any]],
    face: FaceConfig,
    upsample: BackgroundUpsampler,
) -> int:
    """Phase 3 for one photo: the number of faces pasted; writes OUT/restored/<rel>.png."""
    faces, matrices = [], []
    for f in record["faces"]:
        crop = crops.get(f["crop"])
        if crop is None or crop.get("status") != "ok":
            continue  # flagged (non-finite, constant): the photo keeps its own face there
        faces.append(read_image(output_dir / RESTORED_CROPS_DIR / f["crop"]))
        matrices.append(np.asarray(f["transform"], np.float64))
    out = paste_faces(
        read_image(input_dir / rel),
        faces,
        matrices,
        record["crop_size"],
        upscale=face.upscale,
        erode=face.erode,
        feather=face.feather,
        upsampler=upsample,
    )
    write_png(output_dir / PHOTOS_DIR / output_name(rel), out)
    return len(faces)


def paste_fingerprint(
    record: dict[str, Any], crops: dict[str, dict[str, Any]], face: FaceConfig, background: str
) -> str:
    """What a restored photo depends on: its detection, its restored crops (their fingerprints), the paste
    settings and the background upsampler (its weights)."""
    restored = [crops.get(f["crop"], {}).get("fingerprint") for f in record["faces"]]
    fields = {"detection": record["fingerprint"], "crops": restored, **{k: getattr(face, k) for k in PASTE_KEYS}}
    return fingerprint({**fields, "background": background})


def refuse_other_paste_settings(earlier: dict[str, Any] | None, face: FaceConfig) -> None:
    """reuse=strict: ReuseRefused naming the paste settings that differ from the earlier run's (its manifest's
    `faces`), since the photos would be pasted again."""
    if not earlier:
        return
    current = {k: getattr(face, k) for k in PASTE_KEYS}
    changed = changed_keys({k: earlier.get(k) for k in PASTE_KEYS}, current)
    if changed:
        raise ReuseRefused(
            f"reuse=strict: the photos were pasted with other settings (changed: faces.{', faces.'.join(changed)}); "
            "use another --output, or reuse=auto to paste again"
        )


def run_restore_photos(
    cfg: DictConfig, weights_dir: str | None = None, networks: Networks | None = None
) -> PhotosSummary:
    """Restore the faces of every photo under `cfg.input` into `cfg.output` (module docstring)."""
    start = time.perf_counter()
    face = check_face_config(cfg.faces)
    if cfg.get("method"):  # restore's `method=` (a baseline alone, or DR2+<network>) is for aligned faces so far
        raise ConfigError(
            f"method={cfg.method} is not supported with mode=photos yet: photos are restored by DR2 + `enhancer` "
            "(enhancer.name=<network> for DR2+<network>, enhancer.name=none for DR2 alone)"
        )
    input_dir, output_dir = checked_folders("restore", ("--input", cfg.input), ("--output", cfg.output))
    inputs = list_inputs(input_dir, output_dir, cfg.limit)
    accelerator = resolve_accelerator(cfg.accelerator)
    pipe = DR2E.from_config(cfg, device="cpu", weights_dir=weights_dir, networks=networks)
    crop_size = pipe.enhancer_size  # what the restored crop comes back at; DR2E resizes it to the UNet's size

    # Loaded before any work, so a missing weight file stops the job at once; upscale 1 keeps the photo itself.
    background = load_background(face.background, weights_dir) if face.upscale > 1 else Background("none")
    device = "cuda" if accelerator == "gpu" else "cpu"
    detection = Detection(
        input_dir, output_dir, face, crop_size, device if face.detector.startswith("retinaface") else "cpu"
    )
    earlier_manifest = read_manifest(output_dir) or {}
    if cfg.reuse == "strict":  # refused before anything is written, as a changed detection or crop is
        refuse_other_paste_settings(earlier_manifest.get("faces"), face)
    records, undecodable, detected = detect_photos(detection, inputs.rels, cfg.num_workers, cfg.reuse == "strict")
    unusable = inputs.unusable + undecodable
    earlier_photos = {p["name"]: p for p in earlier_manifest.get("photos", [])}

    aligned_dir = output_dir / ALIGNED_DIR
    settings = {
        **restore_settings(cfg, pipe),
        "mode": "photos",
        "method": "DR2" if pipe.loaded_enhancer is None else f"DR2+{pipe.loaded_enhancer.name}",
        "crop_size": crop_size,
    }
    work = crop_work(records)
    module = RestoreModule(pipe, compile=cfg.compile, channels_last=cfg.channels_last and accelerator == "gpu")
    result = run_predict(
        cfg,
        aligned_dir,
        output_dir,
        work,
        unusable,
        settings,
        module,
        lambda todo: RestoreInputs(aligned_dir, todo, pipe.image_size, cfg.seed, cfg.input_policy),
        "restore_config.yaml",
        final_dir=RESTORED_CROPS_DIR,
        save_dr2=cfg.save_dr2,
        comparison=cfg.comparison,
    )
    if result.records is None:  # another rank of a multi-GPU job: rank 0 pastes and writes the manifest
        return PhotosSummary(output_dir, len(records), 0, 0, 0, 0, detected, 0, 0, 0, 0, [], 0.0)

    crops = {r["name"]: r for r in result.records}
    upsample = background.upsampler(device)
    photos, pasted = [], 0
    for rel, record in records.items():
        expected = paste_fingerprint(record, crops, face, background.identity)
        final = output_dir / PHOTOS_DIR / output_name(rel)
        entry = earlier_photos.get(rel, {})
        if not (final.is_file() and entry.get("paste_fingerprint") == expected):
            entry = {"faces_pasted": paste_photo(input_dir, output_dir, rel, record, crops, face, upsample)}
            pasted += 1
        photos.append(
            {
                "name": rel,
                "restored": str(Path(PHOTOS_DIR) / output_name(rel)),
                "detection": str(Path(FACES_DIR) / f"{photo_key(rel)}.json"),
                **{k: record[k] for k in ("height", "width", "detected", "skipped_too_small", "skipped_not_largest")},
                "faces": [f["crop"] for f in record["faces"]],
                "faces_pasted": entry["faces_pasted"],
                "upscale": face.upscale,
                "paste_fingerprint": expected,
            }
        )
    manifest = read_manifest(output_dir) or {}
    manifest.update(mode="photos", input=str(input_dir), faces=asdict(face), background=background.identity)
    manifest["photos"] = photos
    write_json(output_dir / MANIFEST, manifest)

    summary = PhotosSummary(
        output_dir,
        photos=len(records),
        no_face=sum(1 for r in records.values() if not r["faces"]),
        faces=len(work),
        skipped_too_small=sum(r["skipped_too_small"] for r in records.values()),
        skipped_not_largest=sum(r["skipped_not_largest"] for r in records.values()),
        detected=detected,
        restored=len(result.made()),
        reused=len(result.reused),
        recomputed=len(result.recomputed),
        pasted=pasted,
        bad=result.bad,
        seconds=time.perf_counter() - start,
        earlier_outputs=inputs.output_folders,
    )
    log.info("%s", summary.describe())
    return summary
