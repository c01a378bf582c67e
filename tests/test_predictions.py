"""`eval predictions.<method>=DIR`: other methods' restored folders scored under DR2's protocol, named by method,
with the files they came from; their own W&B runs; `compare` reads them back."""

from __future__ import annotations

import csv
import json
import logging
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import build_tiny_testset
from PIL import Image
from test_evaluation import basicsr_psnr, eval_cfg

from lightning_dr2.config.loader import ConfigError
from lightning_dr2.jobs import compare as cmp
from lightning_dr2.jobs.evaluate import run_eval
from lightning_dr2.weights import sha256sum

SPLITS = ("x4_mild", "x8_severe")
SETTING = "N4_tau4_omega6"  # eval_cfg's one DR2 setting


@pytest.fixture(scope="module")
def testset(tmp_path_factory) -> Path:
    return build_tiny_testset(tmp_path_factory.mktemp("pred"), n=4)


@pytest.fixture(scope="module")
def dr2_run(testset: Path, unet_file: Path, tmp_path_factory) -> tuple[Path, Path]:
    """A DR2 eval run and its restored PNGs copied into a predictions folder (DIR/<split>/<name>.png)."""
    runs = tmp_path_factory.mktemp("runs")
    with pytest.MonkeyPatch.context() as env:  # eval exports $DR2_RUN: keep it out of the other tests
        env.setenv("DR2_RUN", "unset-after-the-fixture")
        result = run_eval(eval_cfg(testset, unet_file, runs))
    copy = runs / "copy"
    for split in SPLITS:
        shutil.copytree(result.run_dir / "restored" / "tiny" / split / SETTING / "restored", copy / split)
    return runs, copy


def by_key(rows: list[dict]) -> dict[tuple[str, str], dict]:
    return {(r["method"], r["split"]): r for r in rows}


def test_predictions_are_scored_exactly_like_dr2_outputs(testset: Path, unet_file: Path, dr2_run) -> None:
    runs, copy = dr2_run
    # DR2's own outputs are reused (same run dir) and the copies scored beside them, in one table.
    both = run_eval(eval_cfg(testset, unet_file, runs, f"predictions.copy={copy}"))
    rows = by_key(both.rows)
    assert set(rows) == {(m, s) for m in ("DR2", "copy") for s in SPLITS}
    for split in SPLITS:
        dr2, ext = rows[("DR2", split)], rows[("copy", split)]
        assert ext["metrics"] == dr2["metrics"]  # the same files through the same code path: exactly equal
        assert ext["n_images"] == dr2["n_images"] == 3
        assert (ext["setting"], ext["N"], ext["missing"], ext["unlisted"]) == ("", None, 0, 0)
        assert dr2["setting"] == SETTING
        # (e) where the images came from and their hashes
        assert ext["provenance"]["predictions"] == str((copy / split).resolve())
    per_image = list(csv.DictReader((both.run_dir / "per_image.csv").open()))
    mine = [r for r in per_image if r["method"] == "copy"]
    assert len(mine) == 6
    for r in mine:
        assert r["sha256"] == sha256sum(copy / r["split"] / r["name"])
        twin = next(d for d in per_image if d["method"] == "DR2" and (d["split"], d["name"]) == (r["split"], r["name"]))
        assert r["psnr"] == twin["psnr"]
    table = both.report_md.read_text()
    assert "| Method | Set | Split | Setting |" in table
    assert f"| DR2 | tiny | x4_mild | {SETTING} | 3 |" in table and "| copy | tiny | x4_mild |  | 3 |" in table
    assert "copy/tiny_x4_mild.png" in table  # the method's own input | output | GT grid
    saved = json.loads((both.run_dir / "results.json").read_text())
    assert saved["wandb_ids"] == {"DR2": "eval-r", "copy": "eval-r-copy"}

    # Predictions alone: no DR2 setting, and no UNet is loaded (its file does not even exist).
    alone = run_eval(eval_cfg(testset, Path("/nowhere/unet.pt"), runs, "settings=[]", f"predictions.copy={copy}"))
    assert [r["metrics"] for r in alone.rows] == [rows[("copy", s)]["metrics"] for s in SPLITS]
    assert {r["method"] for r in alone.rows} == {"copy"}
    # A fingerprint over the files' hashes: a changed file changes it.
    fingerprints = {r["split"]: r["provenance"]["fingerprint"] for r in alone.rows}
    assert fingerprints == {s: rows[("copy", s)]["provenance"]["fingerprint"] for s in SPLITS}


def _cfg(testset: Path, runs: Path, folder: Path, *extra: str):
    """Method `m` alone (no DR2 setting) on x4_mild, PSNR only."""
    options = ("settings=[]", "metrics=[psnr]", f"predictions.m={folder}", *extra)
    return eval_cfg(testset, Path("random"), runs, *options, splits="x4_mild")


def gt_copies(testset: Path, folder: Path, suffix: str = ".png", split: str = "x4_mild") -> Path:
    """A 'method' whose outputs are the ground truth itself, as `suffix` files."""
    (folder / split).mkdir(parents=True)
    for name in sorted(p.name for p in (testset / "hq").glob("*.png"))[:3]:
        Image.open(testset / "hq" / name).save((folder / split / name).with_suffix(suffix), quality=75)
    return folder


def test_missing_extra_and_missized_predictions_are_named(testset: Path, tmp_path: Path) -> None:
    folder = gt_copies(testset, tmp_path / "m")
    split = folder / "x4_mild"
    (split / "001.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 image\(s\) have no file, e.g. expected .*m/x4_mild/001\.png"):
        run_eval(_cfg(testset, tmp_path, folder))
    shutil.copy(split / "000.png", split / "001.png")
    Image.new("RGB", (8, 8)).save(split / "stray.png")
    with pytest.raises(FileNotFoundError, match=r"1 file\(s\) in .* match no image of the split: stray\.png"):
        run_eval(_cfg(testset, tmp_path, folder))
    (split / "stray.png").unlink()
    Image.new("RGB", (48, 40)).save(split / "002.png")
    with pytest.raises(ValueError, match=r"002\.png is 48x40, its ground truth .*hq/002\.png 64x64"):
        run_eval(_cfg(testset, tmp_path, folder))
    Image.new("RGB", (32, 32)).save(split / "002.png")  # square like its square GT: resized, as DR2's outputs are
    assert run_eval(_cfg(testset, tmp_path, folder)).rows[0]["n_images"] == 3

    # allow_missing=true: a missing file and an unmatched one are counted, the rest scored
    (split / "001.png").unlink()
    Image.new("RGB", (8, 8)).save(split / "stray.png")
    (row,) = run_eval(_cfg(testset, tmp_path, folder, "allow_missing=true")).rows
    assert (row["n_images"], row["missing"], row["unlisted"]) == (2, 1, 1)
    report = (tmp_path / "eval" / "r" / "report.md").read_text()
    assert "tiny/x4_mild m: 1 missing, 1 unmatched file(s)" in report


def test_jpeg_predictions_are_accepted_and_scored_as_decoded(testset: Path, tmp_path: Path) -> None:
    folder = gt_copies(testset, tmp_path / "jpeg", ".jpg")
    (row,) = run_eval(_cfg(testset, tmp_path, folder)).rows
    assert row["n_images"] == 3
    names = sorted(p.stem for p in (folder / "x4_mild").glob("*.jpg"))
    expected = np.mean(
        [
            basicsr_psnr(
                np.asarray(Image.open(folder / "x4_mild" / f"{n}.jpg").convert("RGB")),
                np.asarray(Image.open(testset / "hq" / f"{n}.png")),
            )
            for n in names
        ]
    )
    assert row["metrics"]["psnr"] == pytest.approx(expected, abs=1e-9)
    assert 20 < row["metrics"]["psnr"] < 60  # JPEG q75 of the ground truth: close, not equal


def test_layout_and_names_are_checked(testset: Path, tmp_path: Path) -> None:
    folder = gt_copies(testset, tmp_path / "flat")
    for f in (folder / "x4_mild").iterdir():  # files directly in DIR instead of DIR/<split>/
        f.rename(folder / f.name)
    with pytest.raises(FileNotFoundError, match=r"expected .*flat/x4_mild/000\.png.*DIR/<split>/<name>"):
        run_eval(_cfg(testset, tmp_path, folder))
    with pytest.raises(ConfigError, match="predictions.DR2"):  # the name of DR2's own rows
        run_eval(eval_cfg(testset, Path("random"), tmp_path, f"predictions.DR2={folder}"))
    with pytest.raises(ConfigError, match="nothing to evaluate"):
        eval_cfg(testset, Path("random"), tmp_path, "settings=[]")
    with pytest.raises(ConfigError, match="method name"):
        eval_cfg(testset, Path("random"), tmp_path, "predictions={'a b': x}")


def test_each_method_is_its_own_wandb_run_and_compare_reads_them_back(
    testset: Path, unet_file: Path, dr2_run, monkeypatch: pytest.MonkeyPatch
) -> None:
    import wandb

    runs, copy = dr2_run
    started: list[dict] = []

    class FakeRun:
        def __init__(self, kwargs: dict) -> None:
            self.kwargs, self.summary = kwargs, {}

        def log(self, data: dict) -> None:
            self.summary.update({k: v for k, v in data.items() if isinstance(v, float)})

        def finish(self) -> None:
            started.append(self.kwargs | {"summary": self.summary})

    monkeypatch.setattr(wandb, "init", lambda **kwargs: FakeRun(kwargs))
    cfg = eval_cfg(testset, unet_file, runs, "wandb.mode=offline", f"predictions.copy={copy}")  # DR2's reused
    result = run_eval(cfg)
    assert [(k["name"], k["id"], k["config"]["method"], k["mode"]) for k in started] == [
        ("eval/r", "eval-r", "DR2", "offline"),
        ("eval/r-copy", "eval-r-copy", "copy", "offline"),
    ]
    dr2_run_kwargs, copy_run = started
    assert copy_run["config"]["settings"] == [] and copy_run["config"]["predictions.copy"] == str(copy)
    # the other method's run carries no DR2 keys (DR2's run does)
    assert "unet_weights" in dr2_run_kwargs["config"] and "dr2.N" in dr2_run_kwargs["config"]
    assert not [k for k in copy_run["config"] if k.split(".")[0] in ("unet_weights", "dr2", "enhancer", "net")]
    assert copy_run["config"]["metrics"] == dr2_run_kwargs["config"]["metrics"]  # the protocol stays
    assert dr2_run_kwargs["group"] == copy_run["group"] == "eval" and dr2_run_kwargs["project"] == copy_run["project"]
    rows = by_key(result.rows)
    for run in started:
        method = run["config"]["method"]
        assert run["summary"] == {
            f"eval/tiny/{s}/{m}": v for s in SPLITS for m, v in rows[(method, s)]["metrics"].items()
        }

    fakes = [
        SimpleNamespace(name=k["name"], group=k["group"], id=k["id"], summary=k["summary"], config=k["config"])
        for k in started
    ]
    monkeypatch.setattr(wandb, "Api", lambda *a, **k: SimpleNamespace(runs=lambda path, filters=None: fakes))
    back = cmp.load_wandb_runs("me/dr2")
    read = {(e.method, e.split, e.setting): e.metrics for run in back for e in run.entries}
    assert read == {
        (m, s, SETTING if m == "DR2" else ""): rows[(m, s)]["metrics"] for m in ("DR2", "copy") for s in SPLITS
    }
    table = cmp.compare([], None, runs / "cmp", "me/dr2", plot=False).markdown
    assert "| eval/r-copy | copy | tiny | x8_severe |" in table


def test_offline_wandb_writes_one_run_per_method(testset: Path, dr2_run, tmp_path: Path) -> None:
    """Real W&B in offline mode (no network): each method's run lands in the run dir, to `wandb sync` later."""
    _, copy = dr2_run
    cfg = eval_cfg(
        testset, Path("random"), tmp_path, "settings=[]", "metrics=[psnr]", "wandb.mode=offline",
        f"predictions.copy={copy}", f"predictions.again={copy}", splits="x4_mild",
    )  # fmt: skip
    result = run_eval(cfg)
    offline = sorted(p.name for p in (result.run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 2
    assert any(n.endswith("-eval-r-copy") for n in offline) and any(n.endswith("-eval-r-again") for n in offline)


def test_wandb_key_with_unreachable_server_still_writes_one_offline_run_per_method(
    testset: Path, dr2_run, tmp_path: Path, unreachable_wandb_server: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Real W&B, online asked, server unreachable: the eval finishes, each method's run lands offline under its
    own id (it used to stop with "run ID ... is in use"), and the fallback is said once, not once per method."""
    _, copy = dr2_run
    cfg = eval_cfg(
        testset, Path("random"), tmp_path, "settings=[]", "metrics=[psnr]", "wandb.mode=online",
        "wandb.init_timeout=1", f"predictions.copy={copy}", f"predictions.again={copy}", splits="x4_mild",
    )  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="lightning_dr2.loggers"):
        result = run_eval(cfg)
    assert (result.run_dir / "results.json").is_file()
    offline = sorted(p.name for p in (result.run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 2
    assert any(n.endswith("-eval-r-copy") for n in offline) and any(n.endswith("-eval-r-again") for n in offline)
    assert caplog.text.count("continuing offline") == 1
