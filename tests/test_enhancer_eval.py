"""Evaluation while training the enhancer: DR2 of the frozen UNet once per image, then the EMA generator."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import TINY_ENHANCER_RUN, build_tiny_testset, tiny_unet
from contract import assert_fp32_close
from PIL import Image
from torch.utils.data import DataLoader

from lightning_dr2.callbacks.evaluator import EnhancerEvaluator, build_eval_splits
from lightning_dr2.config.loader import ConfigError
from lightning_dr2.config.recipes import load_config, schema_for
from lightning_dr2.datasets.synthetic import generate_faces
from lightning_dr2.diffusion.noise import image_seed
from lightning_dr2.dr2.pipeline import DR2E
from lightning_dr2.dr2.remover import DR2
from lightning_dr2.exports.unet import published_process
from lightning_dr2.image_io import resize
from lightning_dr2.jobs.train_enhancer import train_enhancer
from lightning_dr2.metrics.scoring import group_by_size
from lightning_dr2.metrics.suite import MetricSuite
from lightning_dr2.nets.restorers import build_restorer

SETTING = {"N": 4, "tau": 2, "omega": 3}
TINY_GENERATOR = dict(size=32, min_ch=8, max_ch=32, min_feat_size=16, res_depth=0, bottleneck_size=32)


@pytest.fixture(scope="module")
def testset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_testset(tmp_path_factory.mktemp("enh_eval"), n=3)


def _folder_pairs(tmp: Path) -> None:
    """Folder-mode training pairs (HQ faces and blurred stand-ins for their DR2 outputs at the UNet's 32 px): no
    DR2 runs in training, so every DR2 call of the run is the evaluator's."""
    generate_faces(tmp / "faces", n=6, size=32)
    (tmp / "dr2").mkdir()
    for path in sorted((tmp / "faces").glob("*.png")):
        small = Image.open(path).convert("RGB").resize((16, 16), Image.BICUBIC)
        small.resize((32, 32), Image.BICUBIC).save(tmp / "dr2" / path.name)


def _cfg(tmp: Path, testset: Path, *extra: str):
    return load_config(
        "enhance_tiny",
        [
            "data.mode=folder",
            f"data.hq_root={tmp / 'faces'}",
            f"data.dr2_root={tmp / 'dr2'}",
            *TINY_ENHANCER_RUN,
            "data.synthetic_n=6",
            "trainer.val_check_interval=100",
            "trainer.max_steps=4",
            "checkpoint.every_n_steps=0",
            f"runs_dir={tmp / 'runs'}",
            "run=r",
            "evaluator.enabled=true",
            "evaluator.every_n_steps=2",
            f"evaluator.sets=[{{name: tiny, root: '{testset}', splits: [x4_mild], limit: 2}}]",
            f"evaluator.settings=[{SETTING}]".replace("'", ""),
            "evaluator.metrics=[psnr, ssim]",
            "evaluator.batch_size=2",
            "evaluator.random_metric_networks=true",
            *extra,
        ],
        schema=schema_for("enhance_tiny"),
    )


def _count_dr2_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Spy on the DR2 sampler: one entry (the batch size) per call."""
    calls: list[int] = []
    original = DR2.__call__

    def spy(self, y, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        calls.append(y.shape[0])
        return original(self, y, *args, **kwargs)

    monkeypatch.setattr(DR2, "__call__", spy)
    return calls


def test_enhancer_run_logs_eval_metrics_at_the_configured_iterations(testset: Path, tmp_path: Path) -> None:
    _folder_pairs(tmp_path)
    result = train_enhancer(_cfg(tmp_path, testset))
    keys = {"eval/tiny/x4_mild/psnr", "eval/tiny/x4_mild/ssim"}
    # Every 2 iterations of 2 optimizer steps each: Lightning's global steps 4 and 8 (files and logs use it).
    files = sorted((result.run_dir / "eval").glob("results_step*.json"))
    assert [f.name for f in files] == ["results_step0000004.json", "results_step0000008.json"]
    for f in files:
        values = json.loads(f.read_text())
        assert values.keys() == keys and all(v == v for v in values.values())  # no NaN
    rows = (result.run_dir / "csv" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    logged = [r.split(",") for r in rows[1:]]
    psnr_steps = {int(r[header.index("step")]) for r in logged if r[header.index("eval/tiny/x4_mild/psnr")]}
    assert psnr_steps == {4, 8}
    assert (result.run_dir / "eval" / "eval_tiny_x4_mild_step0000008.png").is_file()


def test_dr2_runs_once_per_image_across_evaluations(
    testset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _folder_pairs(tmp_path)
    calls = _count_dr2_calls(monkeypatch)
    two = [f"evaluator.settings=[{SETTING}, {{N: 8, tau: 1, omega: 2}}]".replace("'", "")]
    result = train_enhancer(_cfg(tmp_path, testset, *two))
    assert len(sorted((result.run_dir / "eval").glob("results_step*.json"))) == 2  # two evaluations
    assert sum(calls) == 2 * 2  # 2 images x 2 settings, all in the first evaluation
    (evaluator,) = [cb for cb in result.trainer.callbacks if isinstance(cb, EnhancerEvaluator)]
    assert {len(v) for v in evaluator.dr2_outputs.values()} == {2} and len(evaluator.dr2_outputs) == 2
    assert {"eval/tiny/x4_mild/N8_tau1_omega2/psnr", "eval/tiny/x4_mild/N4_tau2_omega3/psnr"} <= set(
        evaluator.last_results
    )


def test_cached_evaluation_equals_dr2e_inference(testset: Path) -> None:
    """The evaluator's numbers for a generator = scoring DR2E(unet, generator) outputs, same images and seeds."""
    torch.manual_seed(0)
    unet = tiny_unet().eval()
    generator = build_restorer("sparnet", TINY_GENERATOR).eval()
    sets = [{"name": "tiny", "root": str(testset), "splits": ["x8_severe"], "limit": 3}]
    process = published_process(unet.flags)
    evaluator = EnhancerEvaluator(
        sets=sets,
        settings=[SETTING],
        metrics=["psnr", "ssim"],
        batch_size=2,
        respacing=100,
        random_metric_networks=True,
        seed=5,
        unet=unet,
        diffusion=process,
        enhancer_size=32,
    )
    module = SimpleNamespace(generator=generator, device=torch.device("cpu"))
    trainer = SimpleNamespace(callbacks=[], world_size=1, global_rank=0, is_global_zero=True, loggers=[], global_step=0)
    evaluator.setup(trainer, module, "fit")
    first = evaluator.evaluate(trainer, module)
    assert evaluator.cached
    again = evaluator.evaluate(trainer, module)  # from the cached DR2 outputs
    assert again == first

    pipe = DR2E(unet, generator, **SETTING, respacing=100, diffusion=process, enhancer_size=32)
    ((_, _, dataset, _, _),) = build_eval_splits(sets)
    suite = MetricSuite(["psnr", "ssim"], paired=True, random_networks=True)
    for groups in DataLoader(dataset, batch_size=3, collate_fn=group_by_size):  # another batch composition
        for batch in groups:
            seeds = [image_seed(5, name) for name in batch["name"]]
            output = pipe.restore_tensors(batch["lq"], seeds=seeds)["output"]
            suite.update(resize(output, batch["hq"].shape[-1]).clamp(-1, 1), batch["hq"])
    expected = suite.compute()
    for metric, value in expected.items():
        assert_fp32_close(torch.tensor(first[f"eval/tiny/x8_severe/{metric}"]), torch.tensor(value), metric)


def test_evaluator_without_sets_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"evaluator\.sets=\[\] must list the benchmark sets"):
        load_config("enhance_tiny", ["evaluator.enabled=true"], schema=schema_for("enhance_tiny"))
    with pytest.raises(ConfigError, match=r"evaluator\.settings\[0\]\.omega"):
        load_config(
            "enhance_tiny",
            [
                "evaluator.enabled=true",
                f"evaluator.sets=[{{root: '{tmp_path}'}}]",
                "evaluator.settings=[{N: 8, tau: 40, omega: 30}]",
            ],
            schema=schema_for("enhance_tiny"),
        )
