"""The one scoring path (`metrics.scoring.Scorer`): the training-time evaluator scores its in-memory outputs
exactly as `eval` scores the same outputs saved as PNG files, and both score the same images."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import DataLoader

from lightning_dr2.callbacks.evaluator import BenchmarkEvaluator, build_eval_splits
from lightning_dr2.datasets.scored_images import ScoredImages
from lightning_dr2.datasets.synthetic import render_face
from lightning_dr2.datasets.testsets import MANIFEST
from lightning_dr2.image_io import read_image_tensor, resize, to_uint8_images, write_png
from lightning_dr2.metrics.catalogue import metric_key
from lightning_dr2.metrics.scoring import Scorer, as_saved, group_by_size
from lightning_dr2.metrics.suite import MetricSuite
from lightning_dr2.modules.scorer import ScoreModule

LISTED = ["a.jpg", "b.jpg", "c.jpg"]  # c is smaller: two same-size groups
METRICS = ["psnr", "ssim", "deg"]


def stub_output(lq: Tensor) -> Tensor:
    """A "restored" image that is neither on uint8 levels nor at its ground truth's size: what makes saving
    the output and resizing it to the ground truth matter."""
    return (resize(lq, 32) * 0.9 + 0.013).clamp(-1, 1)


class StubEvaluator(BenchmarkEvaluator):
    def restorer(self, network: nn.Module, setting: dict[str, Any], key: str, target_size: int):
        return lambda lq, names: stub_output(lq)


TRAINER = SimpleNamespace(callbacks=[], world_size=1, global_rank=0, is_global_zero=True, loggers=[], global_step=0)
MODULE = SimpleNamespace(net=nn.Identity(), device=torch.device("cpu"))


def stub_evaluator(sets: list[dict], metrics: list[str]) -> StubEvaluator:
    evaluator = StubEvaluator(sets=sets, metrics=metrics, batch_size=2, random_metric_networks=True, log_images=0)
    evaluator.setup(TRAINER, MODULE, "validate")
    return evaluator


@pytest.fixture
def jpeg_set(tmp_path: Path) -> Path:
    """A paired split with JPEG ground truth (whose own gray the identity metric reads), mixed sizes, and an
    LQ/HQ pair on disk that the manifest does not list (`eval` never scores it)."""
    root = tmp_path / "set"
    (root / "hq").mkdir(parents=True)
    (root / "x4" / "lq").mkdir(parents=True)
    for i, name in enumerate([*LISTED, "z.jpg"]):
        size = 40 if name == "c.jpg" else 48
        face = Image.fromarray(render_face(400 + i, size))
        face.save(root / "hq" / name, quality=90)
        face.resize((size // 2, size // 2), Image.BICUBIC).save(root / "x4" / "lq" / name, quality=50)
    listed = {name: {} for name in LISTED}
    (root / MANIFEST).write_text(json.dumps({"images": listed, "splits": {"x4": {"images": listed}}}))
    return root


def eval_scores(root: Path, out: Path, drop_target_gray: bool = False) -> dict[str, float]:
    """What `eval` reports for the stub's outputs: saved as PNGs, read back and scored by its ScoreModule."""
    rows = []
    for name in LISTED:
        lq = root / "x4" / "lq" / name
        png = write_png(out / "restored" / f"{name}.png", to_uint8_images(stub_output(read_image_tensor(lq)[None]))[0])
        rows.append((name, png, root / "hq" / name, lq))
    module = ScoreModule(MetricSuite(METRICS, random_networks=True), out / "scores")
    for batch in DataLoader(ScoredImages(rows), batch_size=2, collate_fn=group_by_size):
        if drop_target_gray:
            batch = [{k: v for k, v in group.items() if k != "target_gray"} for group in batch]
        module.test_step(batch, 0)
    return module.scorer.compute()


def test_evaluator_scores_like_eval_on_saved_outputs(jpeg_set: Path, tmp_path: Path) -> None:
    evaluator = stub_evaluator([{"name": "jpg", "root": str(jpeg_set), "splits": ["x4"]}], METRICS)
    ((_, _, dataset, _, _),) = evaluator.splits
    assert [item["name"] for item in dataset] == LISTED  # the unlisted pair is left out, as eval leaves it out
    assert all(item["hq_gray"].dtype == torch.uint8 for item in dataset)

    got = evaluator.evaluate(TRAINER, MODULE)
    expected = eval_scores(jpeg_set, tmp_path)
    # same machine, same groups, same calls: the one scoring path gives the same bits
    assert got == {metric_key("jpg", "x4", metric): value for metric, value in expected.items()}

    # ... and both rules it shares matter here: the ground truth's JPEG gray and scoring the saved output
    assert eval_scores(jpeg_set, tmp_path / "rgb_gray", drop_target_gray=True)["deg"] != expected["deg"]
    scorer = Scorer(MetricSuite(["psnr"]))
    for groups in DataLoader(dataset, batch_size=2, collate_fn=group_by_size):
        for batch in groups:
            unsaved = resize(stub_output(batch["lq"]), batch["hq"].shape[-1]).clamp(-1, 1)
            scorer.suite.update(unsaved, batch["hq"])  # the float output resized: not what eval scores
    assert scorer.compute()["psnr"] != expected["psnr"]


def test_evaluator_takes_the_images_eval_takes(jpeg_set: Path) -> None:
    ((_, _, dataset, _, _),) = build_eval_splits([{"name": "jpg", "root": str(jpeg_set), "limit": 2}])
    assert [item["name"] for item in dataset] == LISTED[:2]


def test_outputs_without_ground_truth_are_scored_at_their_own_size(tmp_path: Path) -> None:
    """A real LQ set of mixed sizes: the output is not brought to its input's size (only to a ground truth's)."""
    folder = tmp_path / "real"
    folder.mkdir()
    for i, size in enumerate((20, 24)):
        Image.fromarray(render_face(500 + i, size)).save(folder / f"{i}.png")
    evaluator = stub_evaluator([{"name": "real", "root": str(folder), "kind": "real"}], ["psnr"])
    ((_, _, dataset, paired, _),) = evaluator.splits
    restore = evaluator.restorer(MODULE.net, {}, "", 0)
    _, rows, _ = evaluator._evaluate_split(restore, dataset, paired, None, 32, torch.device("cpu"), (1, 0))
    assert [row["thumb"][1].shape[-1] for row in rows] == [32, 32]  # the scored outputs


def test_a_paired_output_is_scored_at_its_ground_truths_size() -> None:
    torch.manual_seed(0)
    target = torch.rand(2, 3, 24, 24) * 2 - 1
    pred = torch.rand(2, 3, 16, 16) * 2 - 1
    scored, rows = Scorer(MetricSuite(["psnr"])).score(["x", "y"], pred, target)
    assert torch.equal(scored, resize(as_saved(pred), 24).clamp(-1, 1))
    assert [row["name"] for row in rows] == ["x", "y"] and all(row["psnr"] > 0 for row in rows)
    on_levels = as_saved(pred)
    assert torch.equal(as_saved(on_levels), on_levels)  # a saved image comes back bit for bit
