"""Evaluation: the eval job end to end, resume, 1 vs 2 processes, and the evaluator callback in training.

Kept fast: most runs score PSNR/SSIM only (FID's own numerics are tested in test_fid/test_frechet); one run
keeps FID (a 12-d stand-in feature network, 3 images, one split) to check its wiring end to end.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from conftest import build_tiny_testset, save_eval_unet
from contract import assert_fp32_close
from html_page import parse_page
from PIL import Image

from lightning_dr2.callbacks.evaluator import DR2Evaluator
from lightning_dr2.config.loader import ConfigError
from lightning_dr2.config.pipeline import EvalConfig
from lightning_dr2.config.recipes import load_config
from lightning_dr2.jobs.evaluate import run_eval, verified_outputs
from lightning_dr2.metrics.frechet import save_stats
from lightning_dr2.modules.ddpm import DDPMModule
from lightning_dr2.provenance import ReuseRefused
from lightning_dr2.weights import sha256sum


@pytest.fixture(scope="module")
def testset(tmp_path_factory) -> Path:
    return build_tiny_testset(tmp_path_factory.mktemp("eval"), n=4)


class TinyFeatures(torch.nn.Module):
    """Stands in for the FID Inception (12-d features: 2x2 mean-pooled RGB) so FID's wiring is tested in
    seconds; the real network and the 2048-d Frechet numerics are tested in test_fid / test_frechet."""

    feature_dim = 12

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.adaptive_avg_pool2d(x, 2).flatten(1)


def eval_cfg(testset: Path, unet_file: Path, runs: Path, *extra: str, splits: str = "x4_mild, x8_severe", fid=""):
    fid_reference = f", fid_reference: {fid}" if fid else ""
    # one DR2 setting, unless the test gives its own settings or a sweep (both together are an error)
    own = any(e.startswith(("settings=", "sweep.")) for e in extra)
    settings = [] if own else ["settings=[{N: 4, tau: 4, omega: 6}]"]
    return load_config(
        None,
        [
            f"unet_weights={unet_file}",
            "enhancer.name=none",
            "enhancer.size=64",
            f"sets=[{{name: tiny, root: {testset}, splits: [{splits}], limit: 3{fid_reference}}}]",
            "metrics=[psnr, ssim]",
            *settings,
            "random_metric_networks=true",
            f"runs_dir={runs}",
            "run=r",
            "wandb.mode=disabled",
            "batch_size=2",
            "num_workers=0",
            "progress_bar=false",
            "report_images=2",
            *extra,
        ],
        schema=EvalConfig,
    )


def basicsr_psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / mse))


def test_eval_end_to_end_reference_row_and_resume(testset: Path, unet_file: Path, tmp_path: Path) -> None:
    result = run_eval(eval_cfg(testset, unet_file, tmp_path, "reference=true"))
    rows = {(r["split"], r["setting"]): r for r in result.rows}
    assert set(rows) == {(s, t) for s in ("x4_mild", "x8_severe") for t in ("input", "N4_tau4_omega6")}
    for row in result.rows:
        assert row["n_images"] == 3
        assert set(row["metrics"]) == {"psnr", "ssim"}
    # The "Input" row is the papers' protocol applied to the LQ files: check PSNR independently.
    names = sorted(p.name for p in (testset / "x8_severe" / "lq").glob("*.png"))[:3]
    expected = np.mean(
        [
            basicsr_psnr(
                np.asarray(Image.open(testset / "x8_severe" / "lq" / n)), np.asarray(Image.open(testset / "hq" / n))
            )
            for n in names
        ]
    )
    assert rows[("x8_severe", "input")]["metrics"]["psnr"] == pytest.approx(expected, abs=1e-9)
    assert rows[("x4_mild", "input")]["metrics"]["psnr"] > rows[("x8_severe", "input")]["metrics"]["psnr"]
    run = result.run_dir
    saved = json.loads((run / "results.json").read_text())
    assert saved["results"] == json.loads(json.dumps(result.rows))
    with open(run / "per_image.csv") as fh:
        assert len(list(csv.DictReader(fh))) == 4 * 3
    report = (run / "report.md").read_text()
    assert "| tiny | x8_severe | N4_tau4_omega6 | 3 |" in report
    grids = sorted(p for p in (run / "report").glob("*.png") if not p.name.startswith("worst_"))
    assert len(grids) == 4  # one per (split, setting)
    assert sorted(p.name for p in (run / "report").glob("worst_*.png")) == ["worst_psnr.png", "worst_ssim.png"]
    assert all(min(Image.open(g).size) >= 2 * 128 for g in grids)  # 2 rows of faces upscaled to >= 128 px
    page = result.report_html.read_text()
    assert result.report_html == run / "report.html"
    # 4 grids + the worst images of 2 metrics + a bar chart per metric, all embedded and decodable; no network
    parsed = parse_page(page)
    assert len(parsed.png_images()) == 8 and parsed.external == []
    assert "N4_tau4_omega6" in parsed.cells
    # Resume: a second run reuses the restored images instead of recomputing them.
    restored = next((run / "restored" / "tiny" / "x4_mild" / "N4_tau4_omega6" / "restored").glob("*.png"))
    before = restored.stat().st_mtime_ns
    again = run_eval(eval_cfg(testset, unet_file, tmp_path))
    assert restored.stat().st_mtime_ns == before
    assert [r["metrics"] for r in again.rows] == [r["metrics"] for r in result.rows if r["setting"] != "input"]


def test_eval_fid_reference_by_file_name_through_weights_lookup(
    testset: Path, unet_file: Path, tmp_path: Path, monkeypatch
) -> None:
    # The recipes name the statistics file (fid_reference: inception_FFHQ_512-...pth); it lives in $DR2_WEIGHTS,
    # not in the working directory. The result key names the reference.
    weights = tmp_path / "weights"
    save_stats(weights / "my_ref_stats.npz", np.zeros(12), np.eye(12), 10)
    monkeypatch.setenv("DR2_WEIGHTS", str(weights))
    monkeypatch.setattr("lightning_dr2.nets.inception.FIDInceptionV3", TinyFeatures)
    monkeypatch.chdir(tmp_path)
    result = run_eval(
        eval_cfg(testset, unet_file, tmp_path, "metrics=[psnr, fid]", splits="x4_mild", fid="my_ref_stats.npz")
    )
    (row,) = result.rows
    assert set(row["metrics"]) == {"psnr", "fid_my_ref_stats"}
    assert np.isfinite(row["metrics"]["fid_my_ref_stats"]) and row["metrics"]["fid_my_ref_stats"] > 0
    assert "FID (my_ref_stats) ↓" in (result.run_dir / "report.md").read_text()


def test_eval_metrics_equal_on_two_processes(testset: Path, unet_file: Path, tmp_path: Path) -> None:
    # The second run reuses the first run's restored images (restore on 2 processes is test_restore's), so
    # this compares the scoring: each image once across ranks, float64 sums merged over ranks.
    one = run_eval(eval_cfg(testset, unet_file, tmp_path, "metrics=[psnr, ssim, deg]", splits="x8_severe"))
    two = run_eval(
        eval_cfg(
            testset,
            unet_file,
            tmp_path,
            "metrics=[psnr, ssim, deg]",
            "devices=2",
            "strategy=ddp_spawn",
            splits="x8_severe",
        )
    )
    for a, b in zip(one.rows, two.rows, strict=True):
        assert a["n_images"] == b["n_images"] == 3
        assert a["metrics"].keys() == b["metrics"].keys() == {"psnr", "ssim", "deg", "deg_identical"}
        for metric, value in a["metrics"].items():
            # equal to rounding, not bitwise: float64 sums add in another order, ArcFace is fp32 at another
            # batch composition (the numerical contract, tests/contract.py)
            assert_fp32_close(b["metrics"][metric], value, metric)
    lines = (tmp_path / "eval" / "r" / "per_image.csv").read_text().splitlines()
    assert len(lines) == 1 + 3  # header + each image once


def test_missing_metric_weights_are_errors_unless_skipped(
    testset: Path, unet_file: Path, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("DR2_WEIGHTS", str(tmp_path / "empty"))
    monkeypatch.setattr("lightning_dr2.weights.lookup.PROJECT_ROOT", tmp_path)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(FileNotFoundError, match="pt_inception-2015-12-05-6726825d.pth"):
        run_eval(
            eval_cfg(
                testset, unet_file, tmp_path, "random_metric_networks=false", "metrics=[psnr, fid]", splits="x4_mild"
            )
        )
    result = run_eval(
        eval_cfg(
            testset,
            unet_file,
            tmp_path,
            "random_metric_networks=false",
            "skip_missing_weights=true",
            "metrics=[psnr, ssim, lpips, fid, deg]",
            splits="x4_mild",
        )
    )
    assert set(result.rows[0]["metrics"]) == {"psnr", "ssim"}
    assert "resnet18_110.pth" in result.notes["deg"] and "pt_inception" in result.notes["fid"]


def tiny_ddpm() -> DDPMModule:
    flags = {
        "image_size": 16,
        "num_channels": 32,
        "channel_mult": "1,2",
        "attention_resolutions": "8",
        "num_head_channels": 16,
        "learn_sigma": True,
        "resblock_updown": True,
    }
    return DDPMModule(net=flags, diffusion={"steps": 1000, "schedule": "linear"}, optim={"lr": 1e-4})


def evaluator(testset: Path, out: Path) -> DR2Evaluator:
    return DR2Evaluator(
        sets=[{"name": "tiny", "root": str(testset), "splits": ["x4_mild"], "limit": 3}],
        settings=[{"N": 2, "tau": 2, "omega": 4}],
        every_n_steps=2,
        metrics=["psnr", "ssim"],
        batch_size=2,
        random_metric_networks=True,
        out_dir=out,
    )


class _Faces(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int) -> dict:
        return {"image": torch.zeros(3, 16, 16), "index": i}


def test_evaluator_logs_during_training_and_matches_on_two_processes(testset: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = tiny_ddpm()
    cb = evaluator(testset, tmp_path / "one")
    trainer = pl.Trainer(
        max_steps=2,
        accelerator="cpu",
        logger=pl.loggers.CSVLogger(tmp_path),
        callbacks=[cb],
        enable_progress_bar=False,
        limit_val_batches=0,
        enable_model_summary=False,
    )
    trainer.fit(module, torch.utils.data.DataLoader(_Faces(), batch_size=4))
    keys = {"eval/tiny/x4_mild/psnr", "eval/tiny/x4_mild/ssim"}
    assert keys <= set(cb.last_results)
    header = (Path(trainer.logger.log_dir) / "metrics.csv").read_text().splitlines()[0]
    assert all(k in header for k in keys)
    grid = tmp_path / "one" / "eval_tiny_x4_mild_step0000002.png"
    assert min(Image.open(grid).size) >= 128  # 64 px faces upscaled so a person can see them

    # validate on 2 processes with the same weights: the numbers of the 1-process evaluation above (each
    # image once, seeds by name, float64 sums merged over ranks).
    validate_two = pl.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp_spawn",
        logger=False,
        callbacks=[evaluator(testset, tmp_path / "v2")],
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    validate_two.validate(module, torch.utils.data.DataLoader(_Faces(), batch_size=4), verbose=False)
    a = json.loads(next((tmp_path / "one").glob("results_*.json")).read_text())
    b = json.loads(next((tmp_path / "v2").glob("results_*.json")).read_text())
    assert a.keys() == b.keys() == keys
    for key in a:  # fp32 DR2 convolutions round with the batch composition: equal to fp32 rounding
        assert b[key] == pytest.approx(a[key], rel=1e-6), key


# ------------------------------------------------------------- provenance: results name what made them


def other_unet(root: Path, seed: int) -> Path:
    """Another seeded random UNet with the same flags (what a user swaps in with unet_weights=...)."""
    return save_eval_unet(root, seed, perturb=0.05)


def test_eval_rerun_with_other_weights_recomputes_and_rows_name_the_weights(
    testset: Path, unet_file: Path, tmp_path: Path
) -> None:
    args = ("metrics=[psnr]",)
    first = run_eval(eval_cfg(testset, unet_file, tmp_path, *args, splits="x8_severe"))
    restored = tmp_path / "eval" / "r" / "restored" / "tiny" / "x8_severe" / "N4_tau4_omega6" / "restored" / "000.png"
    made = restored.stat().st_mtime_ns
    unet2 = other_unet(tmp_path / "other", seed=1)
    second = run_eval(eval_cfg(testset, unet2, tmp_path, *args, splits="x8_severe"))
    (a,), (b,) = first.rows, second.rows
    assert restored.stat().st_mtime_ns != made  # recomputed, not "already done"
    assert b["n_images"] == 3 and b["metrics"]["psnr"] != pytest.approx(a["metrics"]["psnr"], abs=1e-3)
    saved = json.loads((second.run_dir / "results.json").read_text())["results"][0]
    assert saved["provenance"]["unet_sha256"] == sha256sum(unet2) != a["provenance"]["unet_sha256"]
    assert saved["provenance"]["fingerprint"] != a["provenance"]["fingerprint"]
    with open(second.run_dir / "results.csv") as fh:
        assert next(csv.DictReader(fh))["unet_sha256"] == sha256sum(unet2)
    # Same settings again: the restored images are reused and the numbers are those of the same weights.
    made = restored.stat().st_mtime_ns
    third = run_eval(eval_cfg(testset, unet2, tmp_path, *args, splits="x8_severe"))
    assert restored.stat().st_mtime_ns == made
    assert third.rows[0]["provenance"] == b["provenance"] and third.rows[0]["metrics"] == b["metrics"]
    # reuse=strict refuses to replace them and names what changed.
    with pytest.raises(ReuseRefused, match="unet_sha256"):
        run_eval(eval_cfg(testset, unet_file, tmp_path, *args, "reuse=strict", splits="x8_severe"))


def test_restored_outputs_are_scored_only_with_a_matching_fingerprint(testset: Path, unet_file: Path, tmp_path):
    run_eval(eval_cfg(testset, unet_file, tmp_path, "metrics=[psnr]", splits="x4_mild"))
    out = tmp_path / "eval" / "r" / "restored" / "tiny" / "x4_mild" / "N4_tau4_omega6"
    manifest = json.loads((out / "manifest.json").read_text())
    preds, settings, _ = verified_outputs(out, ["000.png", "001.png", "002.png"])
    assert sorted(preds) == ["000.png", "001.png", "002.png"] and settings == manifest["settings"]
    manifest["images"][1]["fingerprint"] = "made-by-something-else"
    (out / "manifest.json").write_text(json.dumps(manifest))
    preds, _, _ = verified_outputs(out, ["000.png", "001.png", "002.png"])
    assert sorted(preds) == ["000.png", "002.png"]


def test_missing_split_or_ground_truth_is_an_error_or_a_counted_warning(testset: Path, tmp_path: Path) -> None:
    root = tmp_path / "set"
    shutil.copytree(testset, root)
    (root / "hq" / "001.png").unlink()
    shutil.rmtree(root / "x8_severe")
    shutil.copy(root / "x4_mild" / "lq" / "000.png", root / "x4_mild" / "lq" / "0000_stray.png")
    inputs_only = ("settings=[]", "reference=true", "metrics=[psnr]")
    with pytest.raises(ConfigError, match="x8_severe"):
        run_eval(eval_cfg(root, Path("random"), tmp_path, *inputs_only))
    with pytest.raises(FileNotFoundError, match=r"hq/001\.png"):
        run_eval(eval_cfg(root, Path("random"), tmp_path, *inputs_only, splits="x4_mild"))
    result = run_eval(eval_cfg(root, Path("random"), tmp_path, *inputs_only, "allow_missing=true"))
    (row,) = result.rows
    assert row["split"] == "x4_mild" and row["n_images"] == 2 and row["missing"] == 1
    assert row["unlisted"] == 1  # the stray file is reported, never scored
    saved = json.loads((result.run_dir / "results.json").read_text())
    assert saved["missing"] == {"tiny/x4_mild": 1, "tiny/x8_severe": 3}
    report = (result.run_dir / "report.md").read_text()
    assert "tiny/x4_mild: 1 image(s)" in report and "tiny/x8_severe: split missing" in report
    assert (result.run_dir / "run_info.json").is_file()


def test_n_tau_sweep_gives_every_pair_a_plot_and_reuses_outputs(testset: Path, unet_file: Path, tmp_path: Path) -> None:
    sweep = ["sweep.N=[2,4]", "sweep.tau=[3,4]"]
    cfg = eval_cfg(testset, unet_file, tmp_path, *sweep, splits="x4_mild")
    assert [(s.N, s.tau, s.omega) for s in cfg.settings] == [(2, 3, None), (2, 4, None), (4, 3, None), (4, 4, None)]
    result = run_eval(cfg)
    assert sorted((r["N"], r["tau"]) for r in result.rows) == [(2, 3), (2, 4), (4, 3), (4, 4)]
    plot = result.run_dir / "report" / "ablation_tiny_x4_mild.png"
    assert plot.is_file() and "ablation_tiny_x4_mild.png" in result.report_md.read_text()
    restored = sorted((result.run_dir / "restored").rglob("restored/*.png"))
    assert len(restored) == 4 * 3
    before = [p.stat().st_mtime_ns for p in restored]
    again = run_eval(eval_cfg(testset, unet_file, tmp_path, *sweep, splits="x4_mild"))
    assert [p.stat().st_mtime_ns for p in restored] == before, "finished (N, tau) outputs are reused"
    assert [r["metrics"] for r in again.rows] == [r["metrics"] for r in result.rows]
    with pytest.raises(ConfigError, match="sweep.N and sweep.tau"):
        eval_cfg(testset, unet_file, tmp_path, "sweep.N=[2]")


def test_eval_wandb_run_carries_the_method_and_never_stops_the_run(
    testset: Path, unet_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An online start that fails (no key here) continues offline; the run's config names the method."""
    import wandb

    started: list[dict] = []

    class FakeRun:
        def log(self, data: dict) -> None:
            pass

        def finish(self) -> None:
            pass

    def fake_init(**kwargs):
        started.append(kwargs)
        if kwargs["mode"] == "online":
            raise wandb.errors.UsageError("api_key not configured (no-tty)")
        return FakeRun()

    monkeypatch.setattr(wandb, "init", fake_init)
    cfg = eval_cfg(testset, unet_file, tmp_path, "wandb.mode=online", "metrics=[psnr]", splits="x4_mild")
    result = run_eval(cfg)
    assert [k["mode"] for k in started] == ["online", "offline"]
    assert started[-1]["config"]["method"] == "DR2"
    assert json.loads((result.run_dir / "results.json").read_text())["method"] == "DR2"
    extra = ["wandb.mode=offline", "method=GFPGAN-v1.4", "run=m"]
    named = eval_cfg(testset, unet_file, tmp_path, *extra, splits="x4_mild")
    run_eval(named)
    assert started[-1]["config"]["method"] == "GFPGAN-v1.4"


def test_report_shows_the_worst_images_per_metric(testset: Path, unet_file: Path, tmp_path: Path) -> None:
    result = run_eval(eval_cfg(testset, unet_file, tmp_path, "report_worst=2", "reference=true", splits="x4_mild"))
    per_image = [
        r
        for r in csv.DictReader((result.run_dir / "per_image.csv").open())
        if r["setting"] != "input"  # the LQ reference row is a baseline, not a result to inspect
    ]
    worst_psnr = sorted(per_image, key=lambda r: float(r["psnr"]))[:2]
    worst_ssim = sorted(per_image, key=lambda r: float(r["ssim"]))[:2]
    report = result.report_md.read_text()
    for metric, worst in (("PSNR", worst_psnr), ("SSIM", worst_ssim)):
        assert f"Worst 2 by {metric}" in report
        assert (result.run_dir / "report" / f"worst_{metric.lower()}.png").is_file()
        section = report[report.index(f"Worst 2 by {metric}") :]
        first, second = (f"{r['set']}/{r['split']}/{r['setting']}/{r['name']}" for r in worst)
        assert f"1. {first}" in section and f"2. {second}" in section
    parsed = parse_page(result.report_html.read_text())
    assert "Worst 2 by PSNR" in parsed.text and len(parsed.png_images()) >= 2


def test_eval_loads_each_network_once_for_every_split_and_setting(
    testset: Path, unet_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """2 splits x 2 settings: the UNet (and the enhancer) are loaded once and shared by the 4 restore jobs."""
    from lightning_dr2.dr2 import pipeline

    loads = {"unet": 0, "enhancer": 0}

    def counted(name: str, load):
        def wrapper(*args, **kwargs):
            loads[name] += 1
            return load(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(pipeline, "load_unet", counted("unet", pipeline.load_unet))
    monkeypatch.setattr(pipeline, "load_restorer", counted("enhancer", pipeline.load_restorer))
    settings = "settings=[{N: 4, tau: 4, omega: 6}, {N: 2, tau: 3, omega: 5}]"
    result = run_eval(eval_cfg(testset, unet_file, tmp_path, settings, "metrics=[psnr]", "report_images=0"))
    assert sorted((r["split"], r["setting"]) for r in result.rows) == [
        (split, setting) for split in ("x4_mild", "x8_severe") for setting in ("N2_tau3_omega5", "N4_tau4_omega6")
    ]
    assert loads == {"unet": 1, "enhancer": 1}
    assert {r["provenance"]["unet_sha256"] for r in result.rows} == {sha256sum(unet_file)}  # what was loaded
