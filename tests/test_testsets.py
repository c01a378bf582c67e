"""Benchmark test sets: spec loading/validation, reproducible resumable builds, paired/LQ-only datasets."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from lightning_dr2.cli import main
from lightning_dr2.config.loader import ConfigError
from lightning_dr2.datasets.degradations import DegradationParams, degrade
from lightning_dr2.datasets.synthetic import render_face
from lightning_dr2.datasets.testset_builder import build_testset
from lightning_dr2.datasets.testset_spec import TESTSETS_DIR, TestSetSpec, load_spec
from lightning_dr2.datasets.testsets import MANIFEST, PairedSplit, RealLQSet, audit_testset, list_splits
from lightning_dr2.image_io import read_image

TINY = TESTSETS_DIR / "tiny_synthetic.yaml"
CELEBA = TESTSETS_DIR / "celeba_test.yaml"
N_GOOD = 7  # six faces + one non-square JPEG in a subfolder


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-10)))


def pngs(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.png"))}


@pytest.fixture(scope="module")
def hq_dir(tmp_path_factory) -> Path:
    """Six 80-px synthetic faces, a non-square JPEG in a subfolder, and one corrupt file."""
    root = tmp_path_factory.mktemp("hq")
    for i in range(6):
        cv2.imwrite(str(root / f"face{i}.png"), render_face(i, 80)[..., ::-1])
    (root / "sub").mkdir()
    wide = cv2.resize(render_face(99, 96), (96, 72))
    cv2.imwrite(str(root / "sub" / "wide.jpg"), wide[..., ::-1])
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    return root


@pytest.fixture(scope="module")
def built(hq_dir, tmp_path_factory) -> Path:
    """The tiny set built once; tests that change it work on a copy."""
    return build_testset(hq_dir, tmp_path_factory.mktemp("built") / "tiny", TINY, progress=False).out


def copy_of(built: Path, tmp_path: Path) -> Path:
    out = tmp_path / "copy"
    shutil.copytree(built, out)
    return out


def manifest(out: Path) -> dict:
    return json.loads((out / MANIFEST).read_text())


# ---------------------------------------------------------------------------------------------- specs


def test_tiny_spec_loads() -> None:
    spec = load_spec(TINY)
    assert spec.name == "tiny_synthetic" and spec.hq_size == 64
    assert list(spec.splits) == ["x4_mild", "x4_severe", "x8_mild", "x8_severe"]
    assert spec.splits["x8_severe"].scale_range == (8.0, 8.0)
    assert all(s.resize_back for s in spec.splits.values())
    assert load_spec("tiny_synthetic") == spec  # a name resolves to experiments/testsets/<name>.yaml
    assert len(spec.spec_hash()) == 64 and spec.spec_hash() == load_spec(TINY).spec_hash()


def test_celeba_spec_has_nine_graded_splits() -> None:
    spec = load_spec(CELEBA)
    assert spec.hq_size == 512 and spec.source
    assert list(spec.splits) == [f"x{r}_{s}" for r in (4, 8, 16) for s in ("mild", "medium", "severe")]
    for r in (4, 8, 16):
        mild, medium, severe = (spec.splits[f"x{r}_{s}"] for s in ("mild", "medium", "severe"))
        for split in (mild, medium, severe):
            assert split.kernel_size == 41 and split.scale_range == (r, r) and split.resize_back
        # Every factor gets worse from mild to severe, with disjoint bands.
        assert mild.sigma_range[1] <= medium.sigma_range[0] and medium.sigma_range[1] <= severe.sigma_range[0]
        assert mild.noise_range[1] <= medium.noise_range[0] and medium.noise_range[1] <= severe.noise_range[0]
        assert mild.jpeg_range[0] > medium.jpeg_range[1] and medium.jpeg_range[0] > severe.jpeg_range[1]


def test_spec_round_trip_and_hash() -> None:
    spec = load_spec(TINY)
    again = TestSetSpec.from_dict(spec.to_dict())  # the explicit form the manifest stores
    assert again.spec_hash() == spec.spec_hash()
    renamed = TestSetSpec.from_dict({**spec.to_dict(), "name": "other", "source": "notes"})
    assert renamed.spec_hash() == spec.spec_hash()  # notes do not change the bytes
    reseeded = TestSetSpec.from_dict({**spec.to_dict(), "seed": 1})
    assert reseeded.spec_hash() != spec.spec_hash()
    reordered = dict(reversed(list(spec.to_dict()["splits"].items())))
    assert TestSetSpec.from_dict({**spec.to_dict(), "splits": reordered}).spec_hash() != spec.spec_hash()


def test_explicit_split_overrides_grid(tmp_path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(
        "name: s\nhq_size: 32\nseed: 3\ndefaults: {kernel_size: 7}\nscales: [4]\n"
        "severities: {mild: {noise_range: [0, 1]}}\n"
        "splits:\n  x4_mild: {jpeg_range: null}\n  blur_only: {scale_range: 1, noise_range: 0}\n"
    )
    spec = load_spec(path)
    assert list(spec.splits) == ["x4_mild", "blur_only"]
    assert spec.splits["x4_mild"].jpeg_range is None and spec.splits["x4_mild"].noise_range == (0.0, 1.0)
    assert spec.splits["blur_only"].kernel_size == 7 and spec.splits["blur_only"].scale_range == (1.0, 1.0)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("seeds: 1\n", ["'seeds'"]),
        ("severities:\n  mild: {sigma: [1, 2]}\nscales: [4]\n", ["'sigma'", "severities.mild"]),
        ("defaults: {kernel: 41}\n", ["'kernel'", "defaults"]),
        ("splits:\n  a: {jpeg_range: [0, 10]}\n", ["split a", "jpeg_range"]),
        ("splits:\n  'bad/name': {}\n", ["bad/name"]),
        ("scales: [4]\n", ["severities"]),
        ("splits:\n  a: {}\n  a: {}\n", ["duplicate key a"]),
        ("scales: 4\nseverities: {mild: {}}\n", ["scales"]),
        ("defaults: {kernel_size: [3]}\n", ["defaults.kernel_size"]),
        ("severities:\n  mild: {scale_range: 2}\nscales: [4]\n", ["scale_range"]),
    ],
)
def test_bad_spec_errors_name_key_and_file(tmp_path, text: str, words: list[str]) -> None:
    path = tmp_path / "bad.yaml"
    base = "name: bad\nhq_size: 64\nseed: 0\n"
    if "splits" not in text and "severities" not in text:
        base += "splits: {a: {}}\n"
    path.write_text(base + text)
    with pytest.raises(ConfigError) as err:
        load_spec(path)
    for word in [str(path), *words]:
        assert word in str(err.value)


def test_spec_mapping_errors_name_key_and_origin() -> None:
    with pytest.raises(ConfigError, match=r"manifest of x: key 'hq_size'.*big"):
        TestSetSpec.from_dict({"name": "t", "hq_size": "big", "seed": 0, "splits": {"a": {}}}, origin="manifest of x")
    with pytest.raises(ConfigError, match=r"manifest of x: missing key 'seed'"):
        TestSetSpec.from_dict({"name": "t", "hq_size": 8, "splits": {"a": {}}}, origin="manifest of x")


def test_missing_spec_names_known_ones() -> None:
    from lightning_dr2.config.loader import ConfigError

    with pytest.raises(ConfigError, match="test-set spec 'no_such_testset' not found.*celeba_test"):
        load_spec("no_such_testset")


# ---------------------------------------------------------------------------------------------- build


def test_layout_and_manifest(built: Path, hq_dir: Path) -> None:
    spec = load_spec(TINY)
    data = manifest(built)
    assert data["name"] == spec.name and data["spec_hash"] == spec.spec_hash() and data["complete"]
    assert TestSetSpec.from_dict(data["spec"]).spec_hash() == spec.spec_hash()
    assert data["created_with"]["lightning_dr2"]
    assert list(data["bad_files"]) == ["broken.png"]  # skipped and listed, not fatal
    names = [f"face{i}.png" for i in range(6)] + ["sub/wide.png"]
    assert sorted(data["images"]) == sorted(names) and data["n_images"] == N_GOOD
    sources = sorted(p.relative_to(hq_dir).as_posix() for p in hq_dir.rglob("*.*"))
    for name, entry in data["images"].items():
        hq = read_image(built / "hq" / name)
        assert hq.shape == (64, 64, 3)
        assert entry["hq_sha256"] == sha(built / "hq" / name)
        assert entry["source_sha256"] == sha(hq_dir / entry["source"])
        assert entry["index"] == sources.index(entry["source"])  # position in the sorted listing
    for k, split in enumerate(spec.splits):
        assert data["splits"][split]["index"] == k
        entries = data["splits"][split]["images"]
        assert sorted(entries) == sorted(names)
        for name, entry in entries.items():
            lq_file = built / split / "lq" / name
            assert entry["lq_sha256"] == sha(lq_file)
            assert entry["hq_sha256"] == data["images"][name]["hq_sha256"]
            assert entry["seed"] == [spec.seed, k, data["images"][name]["index"]]
            params = DegradationParams.from_dict(entry["params"])
            assert params.scale == float(split[1]) and params.kernel_size == 21
            # The recorded params alone reproduce the LQ pixels from the HQ.
            np.testing.assert_array_equal(degrade(read_image(built / "hq" / name), params), read_image(lq_file))
    assert list_splits(built) == list(spec.splits)
    assert not list(built.rglob(".*.tmp"))


def test_rebuild_is_byte_identical_with_workers(built: Path, hq_dir: Path, tmp_path) -> None:
    other = build_testset(hq_dir, tmp_path / "again", TINY, workers=2, progress=False).out
    assert pngs(other) == pngs(built)
    assert (other / MANIFEST).read_bytes() == (built / MANIFEST).read_bytes()


def test_resume_skips_and_repairs(built: Path, hq_dir: Path, tmp_path, capsys) -> None:
    out = copy_of(built, tmp_path)
    before = pngs(out)
    command = ["testset", "--hq", str(hq_dir), "--out", str(out), "--spec", str(TINY)]
    assert main(command) == 0
    text = capsys.readouterr().out
    assert "0 files written" in text and f"{N_GOOD * 5} already present" in text and "1 bad HQ" in text
    (out / "x8_severe" / "lq" / "face2.png").unlink()
    (out / "x4_mild" / "lq" / "face3.png").write_bytes(b"tampered")
    (out / "hq" / "face4.png").unlink()  # re-derived HQ has the recorded hash, so its LQs are kept
    assert main(command) == 0
    assert "3 files written" in capsys.readouterr().out
    assert pngs(out) == before


def test_limit_then_extend(built: Path, hq_dir: Path, tmp_path) -> None:
    # limit counts files of the sorted listing: broken.png, face0.png, face1.png
    out = build_testset(hq_dir, tmp_path / "part", TINY, limit=3, progress=False).out
    assert manifest(out)["n_images"] == 2 and len(PairedSplit(out, "x4_mild")) == 2
    build_testset(hq_dir, out, TINY, progress=False)  # same seeds: the full build only adds
    assert pngs(out) == pngs(built)


def test_refuses_another_spec_unless_overwrite(built: Path, hq_dir: Path, tmp_path) -> None:
    out = copy_of(built, tmp_path)
    spec = load_spec(TINY)
    other = TestSetSpec.from_dict({**spec.to_dict(), "name": "tiny_reseeded", "seed": 7})
    with pytest.raises(ValueError) as err:
        build_testset(hq_dir, out, other, progress=False)
    for word in (spec.name, spec.spec_hash(), other.name, other.spec_hash(), "overwrite"):
        assert word in str(err.value)
    assert manifest(out)["spec_hash"] == spec.spec_hash()  # untouched
    (out / "notes.txt").write_text("mine")
    build_testset(hq_dir, out, other, overwrite=True, progress=False)
    assert manifest(out)["spec_hash"] == other.spec_hash() and manifest(out)["name"] == "tiny_reseeded"
    assert (out / "notes.txt").read_text() == "mine"  # only the build's own outputs are replaced
    assert pngs(out)["hq/face0.png"] == pngs(built)["hq/face0.png"]
    assert pngs(out)["x4_mild/lq/face0.png"] != pngs(built)["x4_mild/lq/face0.png"]


def test_refuses_foreign_folder(hq_dir: Path, tmp_path) -> None:
    out = tmp_path / "foreign"
    out.mkdir()
    (out / "something.txt").write_text("x")
    with pytest.raises(ValueError, match="no manifest.json"):
        build_testset(hq_dir, out, TINY, progress=False)
    with pytest.raises(FileNotFoundError, match="missing_hq"):
        build_testset(tmp_path / "missing_hq", tmp_path / "o", TINY, progress=False)


# ------------------------------------------------------------------------------------------- datasets


def test_paired_split_items(built: Path) -> None:
    ds = PairedSplit(built, "x8_severe")
    assert len(ds) == N_GOOD and not ds.skipped
    item = ds[0]
    assert set(item) == {"lq", "hq", "name", "index"} and item["index"] == 0
    for key in ("lq", "hq"):
        assert item[key].shape == (3, 64, 64) and item[key].dtype == torch.float32
        assert -1.0 <= item[key].min() and item[key].max() <= 1.0
    assert item["name"] == "face0.png"
    assert [ds[i]["name"] for i in range(len(ds))][-1] == "sub/wide.png"
    expected = torch.from_numpy(np.array(read_image(built / "hq" / "face0.png"))).permute(2, 0, 1).float() / 127.5 - 1
    torch.testing.assert_close(item["hq"], expected)


def test_paired_split_skips_missing_and_bad(built: Path, tmp_path) -> None:
    out = copy_of(built, tmp_path)
    (out / "hq" / "face1.png").unlink()
    (out / "x4_mild" / "lq" / "face2.png").write_bytes(b"garbage")
    ds = PairedSplit(out, "x4_mild")
    assert len(ds) == N_GOOD - 2 and sorted(ds.skipped) == ["face1.png", "face2.png"]
    assert "face2.png" not in [ds[i]["name"] for i in range(len(ds))]
    with pytest.raises(FileNotFoundError, match="x16_mild"):
        PairedSplit(out, "x16_mild")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        PairedSplit(tmp_path / "nowhere", "x4_mild")


def test_real_lq_set(built: Path, tmp_path) -> None:
    folder = tmp_path / "wider"
    shutil.copytree(built / "x4_severe" / "lq", folder)
    (folder / "zz_broken.jpg").write_bytes(b"\xff\xd8\xff truncated")
    ds = RealLQSet(folder)
    assert len(ds) == N_GOOD and list(ds.skipped) == ["zz_broken.jpg"]
    item = ds[len(ds) - 1]
    assert set(item) == {"lq", "name", "index"} and item["name"] == "sub/wide.png"
    assert item["lq"].shape == (3, 64, 64) and -1 <= item["lq"].min() and item["lq"].max() <= 1
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="empty"):
        RealLQSet(empty)


def test_severity_and_scale_ordering(built: Path) -> None:
    """Severe splits are further from the HQ than mild ones, and 8x further than 4x (mean PSNR)."""
    names = sorted(manifest(built)["images"])
    hq = {n: read_image(built / "hq" / n) for n in names}

    def mean_psnr(split: str) -> float:
        return float(np.mean([psnr(read_image(built / split / "lq" / n), hq[n]) for n in names]))

    scores = {split: mean_psnr(split) for split in list_splits(built)}
    assert scores["x4_severe"] < scores["x4_mild"] and scores["x8_severe"] < scores["x8_mild"]
    assert scores["x8_mild"] < scores["x4_mild"]


# ------------------------------------------------------------------- provenance: files equal the manifest


def test_overwrite_with_fewer_images_or_splits_removes_stale_files(built: Path, hq_dir: Path, tmp_path) -> None:
    out = copy_of(built, tmp_path)
    build_testset(hq_dir, out, TINY, overwrite=True, limit=3, progress=False)  # broken.png, face0, face1
    data = manifest(out)
    assert sorted(data["images"]) == ["face0.png", "face1.png"] and not data["unlisted"]
    assert audit_testset(out, data).clean
    assert not (out / "x4_mild" / "lq" / "face5.png").exists() and not (out / "hq" / "sub" / "wide.png").exists()
    spec = load_spec(TINY).to_dict()
    fewer = TestSetSpec.from_dict({**spec, "splits": {"x4_mild": spec["splits"]["x4_mild"]}})
    build_testset(hq_dir, out, fewer, overwrite=True, progress=False)
    assert list_splits(out) == ["x4_mild"] and not (out / "x8_severe").exists()
    assert audit_testset(out, manifest(out)).clean


def test_files_not_in_the_manifest_are_reported_then_removed_by_overwrite(built: Path, hq_dir: Path, tmp_path) -> None:
    out = copy_of(built, tmp_path)
    stray = out / "x4_mild" / "lq" / "stray.png"
    shutil.copy(out / "x4_mild" / "lq" / "face0.png", stray)
    build_testset(hq_dir, out, TINY, progress=False)
    assert manifest(out)["unlisted"] == {"x4_mild": ["stray.png"]} and stray.is_file()
    build_testset(hq_dir, out, TINY, overwrite=True, progress=False)
    assert manifest(out)["unlisted"] == {} and not stray.exists()
    assert pngs(out) == pngs(built)


def test_two_inputs_never_share_an_output(tmp_path) -> None:
    hq = tmp_path / "hq"
    hq.mkdir()
    cv2.imwrite(str(hq / "a.png"), render_face(1, 64)[..., ::-1])
    cv2.imwrite(str(hq / "a.jpg"), render_face(2, 64)[..., ::-1])
    with pytest.raises(ValueError, match=r"a\.jpg and a\.png would both be written as a\.png"):
        build_testset(hq, tmp_path / "set", TINY, progress=False)
    assert not (tmp_path / "set" / "hq").exists()


def test_outputs_never_become_inputs(hq_dir: Path, tmp_path) -> None:
    hq = tmp_path / "hq"
    shutil.copytree(hq_dir, hq)
    inside = hq / "built"
    first = build_testset(hq, inside, TINY, progress=False)
    again = build_testset(hq, inside, TINY, progress=False)  # its own PNGs now lie under --hq
    assert first.images == again.images == N_GOOD and again.written == 0
    assert manifest(inside)["n_images"] == N_GOOD
    with pytest.raises(ValueError, match="inside --out"):
        build_testset(inside / "hq", inside, TINY, progress=False)
