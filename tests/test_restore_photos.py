"""`restore mode=photos`: whole photos in (faces detected, aligned, restored as one predict job, pasted back),
with tiny random networks on generated and packaged photos. Outputs, manifest, resume and re-runs with other
settings, bad inputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import tiny_restore_cfg
from contract import assert_uint8_close
from PIL import Image

from lightning_dr2.config.loader import ConfigError
from lightning_dr2.datasets.synthetic import render_face_with_landmarks
from lightning_dr2.faces.paste import crop_mask, crop_to_output
from lightning_dr2.image_io import read_image
from lightning_dr2.jobs.restore import run_restore
from lightning_dr2.jobs.restore_photos import run_restore_photos

pytest.importorskip("skimage", reason="scikit-image ships the packaged test photos (dev extra)")
pytest.importorskip("dlib", reason="the offline face detector (dlib-bin) finds the faces")

from lightning_dr2.jobs.face_benchmark import packaged_photo  # noqa: E402

CROP = 96  # the restored crop's size (enhancer.size with enhancer=none): small, so DR2 on a CPU takes seconds


def _two_faces() -> np.ndarray:
    """Two generated faces side by side on packaged clutter (a 640x360 photo)."""
    photo = cv2.resize(packaged_photo("gravel"), (640, 360))
    for seed, (cx, cy) in ((3, (170.0, 180.0)), (5, (470.0, 180.0))):
        face, _ = render_face_with_landmarks(seed, 256)
        rotation = cv2.getRotationMatrix2D((128.0, 128.0), 0.0, 0.8)
        rotation[:, 2] += (cx - 128.0, cy - 128.0)
        alpha = cv2.warpAffine(np.ones((256, 256), np.float32), rotation, (640, 360))[..., None]
        photo = (photo * (1 - alpha) + cv2.warpAffine(face, rotation, (640, 360)) * alpha).astype(np.uint8)
    return photo


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """astronaut (RGBA, one real face), two generated faces (JPEG in a subfolder), a grayscale photo without
    a face, a truncated JPEG and a text file."""
    root = tmp_path_factory.mktemp("photos")
    rgba = Image.fromarray(packaged_photo("astronaut")).convert("RGBA")
    rgba.putalpha(Image.fromarray(np.where(np.arange(512)[None, :] < 40, 0, 255).astype(np.uint8).repeat(512, 0)))
    rgba.save(root / "astronaut.png")
    (root / "group").mkdir()
    Image.fromarray(_two_faces()).save(root / "group" / "two.jpg", quality=95)
    Image.fromarray(packaged_photo("coffee")).convert("L").save(root / "coffee.png")
    (root / "notes.txt").write_text("not a photo")
    (root / "broken.jpg").write_bytes((root / "group" / "two.jpg").read_bytes()[:2000])
    return root


def _cfg(unet_file: Path, photos: Path, out: Path, *extra: str):
    return tiny_restore_cfg(
        unet_file, photos, out, "mode=photos", "enhancer.name=none", f"enhancer.size={CROP}", "save_dr2=false", *extra
    )


@pytest.fixture(scope="module")
def first_run(unet_file: Path, photos: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("out")
    return out, run_restore_photos(_cfg(unet_file, photos, out))


def test_photos_are_restored_whole_with_crops_and_counts(first_run, photos: Path) -> None:
    out, summary = first_run
    assert (summary.photos, summary.no_face, summary.faces) == (3, 1, 3)
    assert summary.detected == 3 and summary.restored == 3 and summary.pasted == 3
    assert sorted(rel for rel, _ in summary.bad) == ["broken.jpg", "notes.txt"]  # listed, not a crash
    for rel in ("astronaut.png", "group/two.png", "coffee.png"):
        restored = read_image(out / "restored" / rel)
        source = next(photos.glob(str(Path(rel).with_suffix(".*"))))
        assert restored.shape == read_image(source).shape  # upscale=1: the photo's own size
    for crop in ("astronaut/face_0.png", "group/two/face_0.png", "group/two/face_1.png"):
        assert read_image(out / "crops" / "aligned" / crop).shape == (CROP, CROP, 3)
        assert read_image(out / "crops" / "restored" / crop).shape == (CROP, CROP, 3)
    assert not (out / "crops" / "aligned" / "coffee").exists()
    # the grayscale photo without a face comes back as it was read (gray in RGB), byte for byte
    np.testing.assert_array_equal(read_image(out / "restored" / "coffee.png"), read_image(photos / "coffee.png"))


def test_pixels_outside_the_face_masks_are_unchanged(first_run, photos: Path) -> None:
    out, _ = first_run
    manifest = json.loads((out / "manifest.json").read_text())
    faces = {r["name"]: r for r in manifest["images"] if r["status"] == "ok"}
    for rel, source in (("group/two.png", "group/two.jpg"), ("astronaut.png", "astronaut.png")):
        photo, restored = read_image(photos / source), read_image(out / "restored" / rel)
        inside = np.zeros(photo.shape[:2], np.float32)
        for face in (f for f in faces.values() if f["photo"] == source):
            to_photo = crop_to_output(np.asarray(face["transform"]), CROP, CROP, 1)
            inside = np.maximum(inside, cv2.warpAffine(crop_mask(CROP, 0.02, 0.06), to_photo, photo.shape[1::-1]))
        far = cv2.dilate((inside > 0).astype(np.uint8), np.ones((5, 5), np.uint8)) == 0
        assert far.mean() > 0.5
        np.testing.assert_array_equal(restored[far], photo[far])
        assert (restored[inside == 1] != photo[inside == 1]).any()  # the faces were replaced


def test_manifest_has_every_face_with_its_geometry_and_settings(first_run) -> None:
    out, _ = first_run
    manifest = json.loads((out / "manifest.json").read_text())
    faces = [r for r in manifest["images"] if r["status"] == "ok"]
    assert sorted(r["name"] for r in faces) == ["astronaut/face_0.png", "group/two/face_0.png", "group/two/face_1.png"]
    for record in faces:
        assert len(record["box"]) == 4 and set(record["landmarks"]) == {
            "left_eye",
            "right_eye",
            "nose",
            "mouth_left",
            "mouth_right",
        }
        assert np.asarray(record["transform"]).shape == (2, 3) and record["score"] > 0
        assert (record["N"], record["tau"], record["method"]) == (4, 6, "DR2")
        assert isinstance(record["seed"], int) and record["fingerprint"]
    assert len({r["seed"] for r in faces}) == 3  # per face, from the base seed and the crop's name
    two = [r for r in faces if r["photo"] == "group/two.jpg"]
    assert two[0]["box"][2] - two[0]["box"][0] >= two[1]["box"][2] - two[1]["box"][0]  # largest first
    photos = {p["name"]: p for p in manifest["photos"]}
    assert photos["group/two.jpg"]["faces"] == ["group/two/face_0.png", "group/two/face_1.png"]
    assert photos["coffee.png"]["detected"] == 0 and photos["coffee.png"]["restored"] == "restored/coffee.png"
    assert {r["name"] for r in manifest["images"] if r["status"] == "bad"} == {"broken.jpg", "notes.txt"}
    detection = json.loads((out / "faces" / "group" / "two.json").read_text())
    assert detection["detector"] == "dlib_hog" and len(detection["faces"]) == 2


def test_rerun_reuses_everything_and_other_settings_recompute_only_what_they_change(
    first_run, unet_file: Path, photos: Path, tmp_path: Path
) -> None:
    out = Path(shutil.copytree(first_run[0], tmp_path / "out"))  # the first run's outputs stay as they are
    before = {p: p.stat().st_mtime_ns for p in (out / "restored").rglob("*.png")}
    again = run_restore_photos(_cfg(unet_file, photos, out))
    assert (again.detected, again.restored, again.reused, again.pasted) == (0, 0, 3, 0)
    assert {p: p.stat().st_mtime_ns for p in (out / "restored").rglob("*.png")} == before
    # another N: every crop again, no detection, every photo with a face pasted again
    other_n = run_restore_photos(_cfg(unet_file, photos, out, "dr2.N=2"))
    assert (other_n.detected, other_n.restored, other_n.recomputed, other_n.pasted) == (0, 3, 3, 2)
    # another mask: pasted again, nothing restored or detected
    other_erode = run_restore_photos(_cfg(unet_file, photos, out, "dr2.N=2", "faces.erode=0.05"))
    assert (other_erode.detected, other_erode.restored, other_erode.pasted) == (0, 0, 3)
    # the largest face only: detected again; the two-face photo loses its second crop, the rest is reused
    largest = run_restore_photos(_cfg(unet_file, photos, out, "dr2.N=2", "faces.erode=0.05", "faces.select=largest"))
    assert largest.detected == 3 and largest.faces == 2 and largest.skipped_not_largest == 1
    assert largest.restored == 0 and largest.reused == 2
    assert not (out / "crops" / "aligned" / "group" / "two" / "face_1.png").exists()
    manifest = json.loads((out / "manifest.json").read_text())
    assert "group/two/face_1.png" in manifest["stale"]


@pytest.mark.slow  # spawning 2 processes takes ~30 s on a 2-core machine
def test_two_processes_restore_each_face_once_as_one_process_does(first_run, unet_file: Path, photos: Path, tmp_path):
    """The crops of all photos are one predict job: sharded over 2 CPU processes (ddp_spawn), each face is
    restored exactly once, equal to the 1-process run to the contract's bound."""
    one, _ = first_run
    two = tmp_path / "two"
    summary = run_restore_photos(_cfg(unet_file, photos, two, "devices=2", "strategy=ddp_spawn", "batch_size=1"))
    assert summary.restored == 3 and summary.pasted == 3
    names = [r["name"] for r in json.loads((two / "manifest.json").read_text())["images"] if r["status"] == "ok"]
    assert len(names) == len(set(names)) == 3
    for name in names:
        assert_uint8_close(
            read_image(two / "crops" / "restored" / name), read_image(one / "crops" / "restored" / name), name
        )


def test_upscaled_photos_have_the_upscaled_size(unet_file: Path, photos: Path, tmp_path: Path) -> None:
    summary = run_restore_photos(_cfg(unet_file, photos, tmp_path / "out", "faces.upscale=2", "limit=1"))
    assert summary.photos == 1
    assert read_image(tmp_path / "out" / "restored" / "astronaut.png").shape == (1024, 1024, 3)


def test_face_settings_are_checked_at_load_time_and_modes_do_not_mix(unet_file: Path, photos: Path, tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"faces\.select='biggest' must be one of"):
        _cfg(unet_file, photos, tmp_path / "o", "faces.select=biggest")
    with pytest.raises(ConfigError, match=r"mode='video' must be one of \['images', 'photos'\]"):
        _cfg(unet_file, photos, tmp_path / "o", "mode=video")
    with pytest.raises(ConfigError, match="run_restore_photos"):
        run_restore(_cfg(unet_file, photos, tmp_path / "o"))


# --- Real-ESRGAN behind the faces (faces.background=realesrgan_x2plus) ----------------------------------------

TINY_RRDB = {"num_feat": 8, "num_block": 1, "num_grow_ch": 32}  # spandrel fixes the growth at 32


def _save_tiny_realesrgan(folder: Path, scale: int) -> Path:
    """A tiny RRDBNet of `scale` with seeded random weights, saved as the release is ({"params_ema": ...})."""
    import torch

    from lightning_dr2.nets.rrdbnet import RRDBNet

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(scale)
        net = RRDBNet(scale=scale, **TINY_RRDB)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"RealESRGAN_x{scale}plus.pth"
    torch.save({"params_ema": net.state_dict()}, path)
    return path


@pytest.mark.parametrize("scale", [2, 4])
def test_realesrgan_files_load_strictly_and_match_spandrels_port(scale: int, tmp_path: Path, monkeypatch) -> None:
    """Our RRDBNet keeps the released key layout (spandrel recognises the file as Real-ESRGAN) and computes what
    spandrel's independent ESRGAN port computes from the same file."""
    import torch
    from spandrel import ModelLoader

    from lightning_dr2.exports.restorer import load_restorer

    monkeypatch.setenv("DR2_WEIGHTS", str(tmp_path))
    path = _save_tiny_realesrgan(tmp_path, scale)
    loaded = load_restorer(f"realesrgan_x{scale}plus")
    assert loaded.path == path and loaded.options == {"scale": scale, **TINY_RRDB}  # the file decides its config
    reference = ModelLoader().load_from_file(path)
    assert reference.architecture.id == "ESRGAN" and reference.scale == scale
    x = torch.rand(1, 3, 12, 18) * 2 - 1
    with torch.no_grad():
        ours = loaded.module(x)
        theirs = reference.model((x + 1) / 2).clamp(0, 1) * 2 - 1
    assert ours.shape == (1, 3, 12 * scale, 18 * scale)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    with torch.no_grad():  # odd sides: reflect-padded for the x2 model's unshuffle, the padding cropped off
        assert loaded.module(torch.zeros(1, 3, 7, 9)).shape == (1, 3, 7 * scale, 9 * scale)


def test_missing_realesrgan_file_names_it_and_the_fetch_command(unet_file: Path, photos: Path, tmp_path) -> None:
    from lightning_dr2.weights import MissingWeightsError

    cfg = _cfg(unet_file, photos, tmp_path / "out", "faces.upscale=2", "faces.background=realesrgan_x2plus")
    with pytest.raises(MissingWeightsError, match=r"RealESRGAN_x2plus\.pth(.|\n)*weights --fetch RealESRGAN_x2plus"):
        run_restore_photos(cfg)
    assert not (tmp_path / "out" / "crops").exists()  # stopped before any work


def test_realesrgan_background_behind_the_faces(unet_file: Path, tmp_path: Path, monkeypatch) -> None:
    from lightning_dr2.exports.restorer import load_restorer
    from lightning_dr2.faces.background import network_upsampler

    monkeypatch.setenv("DR2_WEIGHTS", str(tmp_path / "weights"))
    _save_tiny_realesrgan(tmp_path / "weights", 2)
    (tmp_path / "in").mkdir()
    photo = cv2.resize(packaged_photo("astronaut"), (256, 256), interpolation=cv2.INTER_AREA)
    Image.fromarray(photo).save(tmp_path / "in" / "astronaut.png")
    out, extra = tmp_path / "out", ("faces.upscale=2", "faces.background=realesrgan_x2plus")
    summary = run_restore_photos(_cfg(unet_file, tmp_path / "in", out, *extra))
    assert summary.photos == 1 and summary.faces == 1
    restored = read_image(out / "restored" / "astronaut.png")
    background = network_upsampler(load_restorer("realesrgan_x2plus").module)(photo, 2)
    assert restored.shape == background.shape == (512, 512, 3)
    np.testing.assert_array_equal(restored[440:], background[440:])  # far below the face: the upsampler's pixels
    assert np.abs(restored[440:].astype(int) - cv2.resize(photo, (512, 512))[440:]).mean() > 1  # not bicubic
    again = run_restore_photos(_cfg(unet_file, tmp_path / "in", out, *extra))
    assert again.pasted == 0 and again.reused == 1


def test_an_upsampler_of_another_scale_is_resized_to_the_asked_one(tmp_path: Path, monkeypatch) -> None:
    from lightning_dr2.exports.restorer import load_restorer
    from lightning_dr2.faces.background import network_upsampler

    monkeypatch.setenv("DR2_WEIGHTS", str(tmp_path))
    _save_tiny_realesrgan(tmp_path, 4)
    upsample = network_upsampler(load_restorer("realesrgan_x4plus").module)
    image = np.random.default_rng(0).integers(0, 256, (10, 14, 3), dtype=np.uint8)
    assert upsample(image, 2).shape == (20, 28, 3) and upsample(image, 3).shape == (30, 42, 3)
    assert upsample(image, 1) is image  # upscale 1: the photo itself


def test_command_line_runs_photos_mode_and_prints_its_summary(unet_file: Path, photos: Path, tmp_path, capsys) -> None:
    from lightning_dr2.cli import main

    argv = ["restore", "--input", str(photos), "--output", str(tmp_path / "out"), "mode=photos", "limit=1"]
    argv += [f"unet_weights={unet_file}", "dr2.N=4", "dr2.tau=6", "dr2.omega=8", "enhancer.name=none"]
    assert main([*argv, f"enhancer.size={CROP}", "num_workers=0", "progress_bar=false"]) == 0
    printed = capsys.readouterr().out
    assert "1 photos (0 without a face" in printed and "restored 1 faces" in printed
    assert (tmp_path / "out" / "restored" / "astronaut.png").is_file()


@pytest.mark.slow  # spawning the workers (each imports torch and Lightning) takes ~20 s on a 2-core machine
def test_detection_in_worker_processes_gives_the_same_records(
    first_run, unet_file: Path, photos: Path, tmp_path, monkeypatch
) -> None:
    """Phase 1 shared by 2 spawned processes (forced for 4 photos) writes the records one process writes."""
    from lightning_dr2.jobs import restore_photos

    monkeypatch.setattr(restore_photos, "POOL_MIN_PHOTOS", 1)
    out = tmp_path / "pool"
    summary = run_restore_photos(_cfg(unet_file, photos, out, "num_workers=2", "limit=0"))
    assert summary.detected == 3 and sorted(rel for rel, _ in summary.bad) == ["broken.jpg", "notes.txt"]
    for record in (first_run[0] / "faces").rglob("*.json"):
        rel = record.relative_to(first_run[0])
        assert json.loads((out / rel).read_text()) == json.loads(record.read_text()), rel


def test_reuse_strict_refuses_other_settings_before_writing_anything(
    first_run, unet_file: Path, photos: Path, tmp_path: Path
) -> None:
    from lightning_dr2.provenance import ReuseRefused

    out = Path(shutil.copytree(first_run[0], tmp_path / "out"))
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.suffix in (".png", ".json")}
    for extra, changed in (
        ("dr2.N=2", "N"),
        ("faces.select=largest", "select"),
        ("faces.min_face_px=200", "min_face_px"),
        ("faces.erode=0.05", "faces.erode"),
    ):
        with pytest.raises(ReuseRefused, match=rf"changed: [^)]*{changed}"):
            run_restore_photos(_cfg(unet_file, photos, out, "reuse=strict", extra))
    after = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.suffix in (".png", ".json")}
    assert after == before
    same = run_restore_photos(_cfg(unet_file, photos, out, "reuse=strict"))
    assert (same.detected, same.restored, same.reused, same.pasted) == (0, 0, 3, 0)
