"""Evaluation: the eval job end to end, resume, 1 vs 2 processes, and the evaluator callback in training."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from conftest import load_fixture
from PIL import Image

from lightning_dr2.callbacks.evaluator import DR2Evaluator
from lightning_dr2.config import EvalConfig, load_config
from lightning_dr2.datasets.synthetic import render_face
from lightning_dr2.datasets.testset_builder import build_testset
from lightning_dr2.datasets.testset_spec import load_spec
from lightning_dr2.evaluation import run_eval
from lightning_dr2.modules.ddpm import DDPMModule


@pytest.fixture(scope="module")
def testset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("eval")
    hq = root / "hq_src"
    hq.mkdir()
    for i in range(4):
        Image.fromarray(render_face(300 + i, 64)).save(hq / f"{i:03d}.png")
    build_testset(hq, root / "set", load_spec("tiny_synthetic"), progress=False)
    return root / "set"


@pytest.fixture(scope="module")
def unet_file(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("unet")
    remover = load_fixture("dr2_remover_tiny.pt")
    torch.save(remover["state_dict"], root / "unet.pt")
    (root / "unet.json").write_text(json.dumps(remover["flags"]))
    return root / "unet.pt"


def eval_cfg(testset: Path, unet_file: Path, runs: Path, *extra: str):
    return load_config(
        None,
        [
            f"unet_weights={unet_file}",
            "enhancer.name=none",
            "enhancer.size=64",
            f"sets=[{{name: tiny, root: {testset}, splits: [x4_mild, x8_severe], limit: 3}}]",
            "settings=[{N: 4, tau: 4, omega: 6}]",
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
        assert set(row["metrics"]) == {"psnr", "ssim", "lpips", "fid", "deg", "deg_identical"}
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
    assert len(list((run / "report").glob("*.png"))) == 4
    # Resume: a second run reuses the restored images instead of recomputing them.
    restored = next((run / "restored" / "tiny" / "x4_mild" / "N4_tau4_omega6" / "restored").glob("*.png"))
    before = restored.stat().st_mtime_ns
    again = run_eval(eval_cfg(testset, unet_file, tmp_path))
    assert restored.stat().st_mtime_ns == before
    assert [r["metrics"] for r in again.rows] == [r["metrics"] for r in result.rows if r["setting"] != "input"]


def test_eval_metrics_equal_on_two_processes(testset: Path, unet_file: Path, tmp_path: Path) -> None:
    # FID is left out here: with 3 images the 2048-d covariances are singular, so sqrtm amplifies the
    # last-bit differences of batch-size-dependent convolutions; its state merge is tested exactly in test_fid.
    one = run_eval(eval_cfg(testset, unet_file, tmp_path / "one", "metrics=[psnr, ssim, lpips, deg]"))
    two = run_eval(
        eval_cfg(
            testset, unet_file, tmp_path / "two", "metrics=[psnr, ssim, lpips, deg]", "devices=2", "strategy=ddp_spawn"
        )
    )
    for a, b in zip(one.rows, two.rows, strict=True):
        assert a["n_images"] == b["n_images"] == 3
        for metric, value in a["metrics"].items():
            # PSNR/SSIM are float64 end to end: equal to the last bits. LPIPS/Deg come from fp32 networks whose
            # convolutions round differently with the batch composition: equal to fp32 precision.
            tol = 1e-12 if metric in ("psnr", "ssim") else 1e-6
            assert b["metrics"][metric] == pytest.approx(value, rel=tol, abs=tol), metric


def test_missing_metric_weights_are_errors_unless_skipped(
    testset: Path, unet_file: Path, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("DR2_WEIGHTS", str(tmp_path / "empty"))
    monkeypatch.setattr("lightning_dr2.weights.lookup.PROJECT_ROOT", tmp_path)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(FileNotFoundError, match="pt_inception-2015-12-05-6726825d.pth"):
        run_eval(eval_cfg(testset, unet_file, tmp_path, "random_metric_networks=false", "metrics=[psnr, fid]"))
    result = run_eval(
        eval_cfg(testset, unet_file, tmp_path, "random_metric_networks=false", "skip_missing_weights=true")
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
        metrics=["psnr", "ssim", "deg"],
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
    keys = {"eval/tiny/x4_mild/psnr", "eval/tiny/x4_mild/ssim", "eval/tiny/x4_mild/deg"}
    assert keys <= set(cb.last_results)
    header = (Path(trainer.logger.log_dir) / "metrics.csv").read_text().splitlines()[0]
    assert all(k in header for k in keys)
    assert (tmp_path / "one" / "eval_tiny_x4_mild_step0000002.png").is_file()

    # validate on 1 and on 2 processes: the same numbers (each image once, seeds by name, float64 sums).
    validate_one = pl.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        callbacks=[evaluator(testset, tmp_path / "v1")],
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    validate_one.validate(module, torch.utils.data.DataLoader(_Faces(), batch_size=4), verbose=False)
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
    a = json.loads(next((tmp_path / "v1").glob("results_*.json")).read_text())
    b = json.loads(next((tmp_path / "v2").glob("results_*.json")).read_text())
    assert a.keys() == b.keys() == keys | {"eval/tiny/x4_mild/deg_identical"}
    for key in a:
        tol = 1e-6 if key.endswith("deg") else 1e-12  # fp32 network vs float64 end to end
        assert b[key] == pytest.approx(a[key], rel=tol, abs=tol), key
