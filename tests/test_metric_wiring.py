"""Metric inputs resolved like everything else: FID reference lookup, the reference named in the result key,
mixed-size batches scored at each image's own size; the catalogue (a Registry) behind the config defaults and the
recipes, and the one builder and parser of logged result keys."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from lightning_dr2.config.pipeline import EvalConfig
from lightning_dr2.config.recipes import load_config
from lightning_dr2.config.run import EvaluatorConfig
from lightning_dr2.metrics.catalogue import (
    METRICS,
    MetricKey,
    check_names,
    default_metrics,
    metric_key,
    parse_metric_key,
    result_key,
    title,
)
from lightning_dr2.metrics.fid import FID
from lightning_dr2.metrics.frechet import save_stats
from lightning_dr2.metrics.scoring import group_by_size
from lightning_dr2.metrics.suite import MetricSuite
from lightning_dr2.modules.scorer import ScoreModule
from lightning_dr2.registry import Registry, UnknownName
from lightning_dr2.weights import MissingWeightsError

FFHQ512 = "inception_FFHQ_512-f7b384ab.pth"


class TinyFeatures(torch.nn.Module):
    """12-d stand-in for the FID Inception (2x2 mean-pooled RGB): wiring tests need features, not Inception."""

    feature_dim = 12

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.adaptive_avg_pool2d(x, 2).flatten(1)


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """$DR2_WEIGHTS is an empty folder of this test (the suite's isolation hides every other weights folder);
    the working dir is elsewhere, so a bare file name is never found relative to it by accident."""
    weights = tmp_path / "weights"
    weights.mkdir()
    monkeypatch.setenv("DR2_WEIGHTS", str(weights))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setattr("lightning_dr2.nets.inception.FIDInceptionV3", TinyFeatures)
    return weights


def test_fid_reference_bare_name_is_found_through_the_weights_lookup(isolated: Path, tmp_path: Path) -> None:
    mu = np.arange(12, dtype=np.float64)
    save_stats(isolated / FFHQ512, mu, np.eye(12), 50)
    fid = FID(FFHQ512, network=TinyFeatures())  # bare name, as in experiments/eval_celeba_test.yaml
    np.testing.assert_array_equal(fid.reference.mu, mu)
    # an explicit weights_dir is searched too; a path is opened as given
    other = tmp_path / "elsewhere"
    save_stats(other / "stats.npz", mu + 1, np.eye(12))
    np.testing.assert_array_equal(FID("stats.npz", network=TinyFeatures(), weights_dir=other).reference.mu, mu + 1)
    np.testing.assert_array_equal(FID(str(other / "stats.npz"), network=TinyFeatures()).reference.mu, mu + 1)
    with pytest.raises(MissingWeightsError, match="missing_stats.npz") as info:
        FID("missing_stats.npz", network=TinyFeatures())
    assert Path(isolated) in info.value.searched


def test_missing_reference_is_named_in_the_skip_note(isolated: Path) -> None:
    # The training evaluator skips missing metric files with a note: it must name the statistics file,
    # not the Inception weights that are present.
    suite = MetricSuite(["psnr", "fid"], fid_reference=FFHQ512, skip_missing=True, random_networks=True)
    assert list(suite.metrics) == ["psnr"]
    assert FFHQ512 in suite.notes["fid"] and "pt_inception" not in suite.notes["fid"]
    with pytest.raises(MissingWeightsError, match=FFHQ512):
        MetricSuite(["fid"], fid_reference=FFHQ512, random_networks=True)


def test_fid_result_key_names_the_reference(isolated: Path) -> None:
    save_stats(isolated / FFHQ512, np.zeros(12), np.eye(12), 50)
    images = torch.rand(4, 3, 16, 16) * 2 - 1
    against_ffhq = MetricSuite(["fid"], fid_reference=FFHQ512, random_networks=True)
    against_gt = MetricSuite(["fid"], random_networks=True)
    against_ffhq.update(images, images)
    against_gt.update(images, images)
    assert list(against_ffhq.compute()) == ["fid_ffhq512"] == [result_key("fid", FFHQ512)]
    assert against_gt.compute() == {"fid_gt": pytest.approx(0.0, abs=1e-6)}  # scored against the targets given
    assert title("fid_ffhq512") == "FID (FFHQ-512)" and title("fid_gt") == "FID (GT)"


def _pair(size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    target = torch.rand(3, size, size, generator=g) * 2 - 1
    pred = (target + 0.2 * torch.randn(3, size, size, generator=g)).clamp(-1, 1)
    return pred, target


def test_mixed_size_batch_is_scored_at_each_images_own_size(isolated: Path, tmp_path: Path) -> None:
    sizes = [32, 64, 32, 48]
    items = []
    for i, size in enumerate(sizes):
        pred, target = _pair(size, i)
        items.append({"name": f"{i}.png", "pred": pred, "target": target})
    groups = group_by_size(items)
    assert [g["name"] for g in groups] == [["0.png", "2.png"], ["1.png"], ["3.png"]]
    assert all(g["pred"].shape[0] == len(g["name"]) for g in groups)

    def score(batches: list[list[dict]]) -> tuple[dict[str, dict], torch.Tensor]:
        suite = MetricSuite(["psnr", "ssim", "fid", "deg"], random_networks=True)
        module = ScoreModule(suite, tmp_path / "scores")
        for batch in batches:
            module.test_step(group_by_size(batch), 0)
        return {r["name"]: r for r in module.per_image}, suite.metrics["fid"].feature_sum.clone()

    mixed, mixed_features = score([items])
    alone, alone_features = score([[it] for it in items])
    for name, row in alone.items():
        for metric in ("psnr", "ssim", "deg"):
            assert mixed[name][metric] == pytest.approx(row[metric], rel=1e-6, abs=1e-9), (name, metric)
    torch.testing.assert_close(mixed_features, alone_features, rtol=1e-6, atol=1e-9)


def test_config_defaults_come_from_the_catalogue() -> None:
    assert default_metrics() == ["psnr", "ssim", "lpips", "fid", "deg"]
    assert set(METRICS) - set(default_metrics()) == {"psnr_vqfr", "ssim_vqfr"}  # protocol variants: by name
    assert list(OmegaConf.structured(EvalConfig).metrics) == default_metrics()
    assert list(OmegaConf.structured(EvaluatorConfig).metrics) == default_metrics()


def test_benchmark_recipe_uses_the_papers_fid_reference() -> None:
    cfg = load_config("eval_celeba_test", [], schema=EvalConfig)
    assert cfg.sets and all(s.fid_reference == FFHQ512 for s in cfg.sets)
    assert all(result_key("fid", s.fid_reference) == "fid_ffhq512" for s in cfg.sets)


def test_items_with_different_tensor_keys_are_never_stacked_together() -> None:
    """A JPEG output (file gray) beside a PNG ground truth and the reverse: same sizes, different keys."""
    size = torch.zeros(3, 8, 8)
    gray = torch.zeros(8, 8, dtype=torch.uint8)
    items = [
        {"name": "a", "pred": size, "target": size, "pred_gray": gray},
        {"name": "b", "pred": size, "target": size, "target_gray": gray},
        {"name": "c", "pred": size, "target": size, "pred_gray": gray},
    ]
    groups = group_by_size(items)
    assert [g["name"] for g in groups] == [["a", "c"], ["b"]]
    assert groups[0]["pred_gray"].shape == (2, 8, 8) and "pred_gray" not in groups[1]


def test_the_catalogue_is_a_registry() -> None:
    assert isinstance(METRICS, Registry) and METRICS.kind == "metric"
    assert METRICS.names()[:5] == default_metrics()
    with pytest.raises(UnknownName, match=r"unknown metrics \['niqe'\]; registered: \['psnr', 'ssim'"):
        check_names(["psnr", "niqe"])
    with pytest.raises(ValueError, match="niqe"):  # UnknownName is a ValueError: callers catching it still do
        MetricSuite(["niqe"])


@pytest.mark.parametrize(
    ("set_name", "split", "setting", "metric"),
    [
        ("celeba_test", "x8_medium", "", "psnr"),
        ("wider_test", "all", "N4_tau22_omega42", "fid_ffhq512"),
        ("my_faces", "x16_severe_jpeg", "input", "fid_gt"),
        ("tiny", "x4_mild", "N8_tau35", "deg_identical"),
    ],
)
def test_metric_keys_round_trip(set_name: str, split: str, setting: str, metric: str) -> None:
    key = metric_key(set_name, split, metric, setting)
    assert key == "/".join(part for part in ("eval", set_name, split, setting, metric) if part)
    assert parse_metric_key(key) == MetricKey(set_name, split, metric, setting)


@pytest.mark.parametrize(
    "key", ["eval/tiny/psnr", "train/tiny/x4_mild/psnr", "eval/tiny/x4_mild/N8_tau35/extra/psnr", "eval//x4/psnr"]
)
def test_a_bad_metric_key_is_named(key: str) -> None:
    with pytest.raises(ValueError, match=f"'{key}' is not a result key eval/<set>/<split>"):
        parse_metric_key(key)


def test_a_key_part_with_a_slash_is_refused() -> None:
    with pytest.raises(ValueError, match=r"\['faces/2024'\] must be non-empty and contain no '/'"):
        metric_key("faces/2024", "all", "fid_gt")
