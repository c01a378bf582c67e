"""Identity distance (Deg, VQFR's calculate_cos_dist protocol): angles, identical-pair exclusion, sync, inputs.

Most tests use a stub "face network" that maps a constant gray image of level L to the unit vector at
angle L / 255 * 180 degrees, so the expected Deg of a pair of flat images is |L1 - L2| / 255 * 180 and the
real preprocessing (gray conversion, resize, scaling) is exercised end to end.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor, nn

import lightning_dr2.metrics.identity as identity_mod
from lightning_dr2.datasets.scored_images import ScoredImages
from lightning_dr2.image_io import resize
from lightning_dr2.metrics.identity import ARCFACE_WEIGHTS_NAME, IdentityDistance, pair_degrees
from lightning_dr2.metrics.scoring import group_by_size
from lightning_dr2.metrics.suite import MetricSuite
from lightning_dr2.modules.scorer import ScoreModule
from lightning_dr2.nets.arcface import ResNetFace18, arcface_input_from_gray, arcface_preprocess

DEG_PER_LEVEL = 180.0 / 255.0
TOL_DEG = 1e-3  # the stub's float32 embeddings resolve small angles to ~1e-4 deg


class AngleStub(nn.Module):
    """(B, 1, 128, 128) in [-1, 1] -> (B, 512): unit vector at angle (gray level / 255 * 180) degrees."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: Tensor) -> Tensor:
        assert x.shape[1:] == (1, 128, 128) and x.dtype == torch.float32
        self.calls += 1
        level = x.mean(dim=(1, 2, 3)) * 127.5 + 127.5
        theta = level / 255.0 * math.pi
        emb = torch.zeros(x.shape[0], 512)
        emb[:, 0], emb[:, 1] = torch.cos(theta), torch.sin(theta)
        return emb * 3.0  # not unit length: the cosine must normalise


def flat(levels: list[int], size: int = 32) -> Tensor:
    """RGB images of constant uint8 level, mapped to [-1, 1]."""
    lv = torch.tensor(levels, dtype=torch.float32).view(-1, 1, 1, 1)
    return (lv / 255.0 * 2 - 1).expand(-1, 3, size, size).contiguous()


def test_known_angles_and_identical_pairs() -> None:
    m = IdentityDistance(network=AngleStub())
    # pairs: 0 vs 255 (180 deg), 0 vs 128, 100 vs 100 (0 deg), 50 vs 51 (0.71 deg: identical), 10 vs 12 (1.41)
    preds = flat([0, 0, 100, 50, 10])
    target = flat([255, 128, 100, 51, 12])
    m.update(preds, target)
    expected = [180.0, 128 * DEG_PER_LEVEL, 2 * DEG_PER_LEVEL]
    assert m.identical_count() == 2
    assert int(m.count) == 3
    torch.testing.assert_close(m.compute(), torch.tensor(sum(expected) / 3, dtype=torch.float64), rtol=0, atol=TOL_DEG)
    assert m.net.calls == 1  # preds and target go through the network in one batch


def test_threshold_is_configurable() -> None:
    m = IdentityDistance(network=AngleStub(), threshold_deg=2.0)
    m.update(flat([10, 10]), flat([12, 13]))  # 1.41 deg -> identical now, 2.12 deg counted
    assert m.identical_count() == 1
    torch.testing.assert_close(float(m.compute()), 3 * DEG_PER_LEVEL, rtol=0, atol=TOL_DEG)


def test_orthogonal_and_opposite_vectors() -> None:
    a = torch.tensor([[1.0, 0.0, 0.0], [2.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
    b = torch.tensor([[0.0, 5.0, 0.0], [-1.0, 0.0, 0.0], [1.0, 1.0, 1e-9]])
    deg = pair_degrees(a, b)
    assert deg.dtype == torch.float64
    torch.testing.assert_close(deg[:2], torch.tensor([90.0, 180.0], dtype=torch.float64))
    assert 0.0 <= float(deg[2]) < 1e-3  # cos may round above 1: clamped, not NaN


def test_nan_when_all_identical() -> None:
    m = IdentityDistance(network=AngleStub())
    m.update(flat([40, 41]), flat([40, 40]))
    assert math.isnan(float(m.compute()))
    assert m.identical_count() == 2


def test_merged_states_equal_single_process() -> None:
    p1, t1 = flat([0, 30, 70]), flat([90, 31, 200])
    p2, t2 = flat([5, 250]), flat([5, 0])
    single = IdentityDistance(network=AngleStub())
    single.update(p1, t1)
    single.update(p2, t2)
    rank0, rank1 = IdentityDistance(network=AngleStub()), IdentityDistance(network=AngleStub())
    rank0.update(p1, t1)
    rank1.update(p2, t2)
    rank0.merge_state(rank1)  # what the all-reduce with dist_reduce_fx="sum" does
    for name in ("sum_deg", "count", "identical"):
        assert torch.equal(getattr(single, name), getattr(rank0, name)), name
    assert float(single.compute()) == float(rank0.compute())
    assert single.identical_count() == rank0.identical_count() == 2


def test_preprocessing_gets_value_range_and_gray(monkeypatch) -> None:
    calls = []
    real = identity_mod.arcface_preprocess

    def spy(images, *, value_range, gray="imread"):
        calls.append((tuple(images.shape), value_range, gray))
        return real(images, value_range=value_range, gray=gray)

    monkeypatch.setattr(identity_mod, "arcface_preprocess", spy)
    m = IdentityDistance(network=AngleStub(), value_range=(0, 255), gray="cvtcolor")
    u8 = torch.tensor([0.0, 255.0]).view(2, 1, 1, 1).expand(2, 3, 40, 40)
    m.update(u8, u8.flip(0)[..., :24, :24])  # sizes may differ: each is resized to 128
    assert sorted(calls) == [((2, 3, 24, 24), (0.0, 255.0), "cvtcolor"), ((2, 3, 40, 40), (0.0, 255.0), "cvtcolor")]
    torch.testing.assert_close(float(m.compute()), 180.0)


def test_value_range_matters() -> None:
    m01 = IdentityDistance(network=AngleStub(), value_range=(0, 1))
    m01.update(flat([0]) * 0.5 + 0.5, flat([255]) * 0.5 + 0.5)
    torch.testing.assert_close(float(m01.compute()), 180.0)


def test_real_network_random_weights() -> None:
    torch.manual_seed(0)
    m = IdentityDistance(network=ResNetFace18())
    assert not m.net.training
    m.train()  # a parent module switching to train mode must not put the instrument in train mode
    assert not m.net.training
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    m.update(x, x.clone())
    assert m.identical_count() == 2 and math.isnan(float(m.compute()))
    m.update(x, torch.rand(2, 3, 64, 64) * 2 - 1)
    deg = float(m.compute())
    assert 0.0 < deg <= 180.0 and int(m.count) + m.identical_count() == 4


def test_under_autocast_embeddings_are_fp32() -> None:
    torch.manual_seed(0)
    m = IdentityDistance(network=ResNetFace18())
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    ref = m.embed(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m.embed(x)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref)


def test_bad_shapes() -> None:
    m = IdentityDistance(network=AngleStub())
    with pytest.raises(ValueError, match="equal B"):
        m.update(flat([0, 1]), flat([0]))


def test_missing_weights_names_the_file(tmp_path) -> None:
    """The suite's isolation fixture hides every weights folder; an empty --weights-dir adds nothing."""
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=ARCFACE_WEIGHTS_NAME):
        IdentityDistance(weights_dir=empty)


def test_default_network_loads_from_weights_dir(tmp_path) -> None:
    torch.manual_seed(0)
    net = ResNetFace18()
    torch.save({f"module.{k}": v for k, v in net.state_dict().items()}, tmp_path / ARCFACE_WEIGHTS_NAME)
    m = IdentityDistance(weights_dir=tmp_path)
    assert not m.net.training and not any(p.requires_grad for p in m.net.parameters())
    assert torch.equal(m.net.fc5.weight, net.fc5.weight)


# ------------------------------------------------------------------ files: JPEG gray as cv2.imread(path, 0)


def _face_like(size: int, seed: int) -> np.ndarray:
    """Smooth colour gradients + noise: JPEG's chroma handling makes RGB->gray differ from libjpeg's luma."""
    rng = np.random.default_rng(seed)
    img = np.zeros((size, size, 3), np.float64)
    img[..., 0] = np.linspace(0, 255, size)[None]
    img[..., 1] = np.linspace(255, 0, size)[:, None]
    img[size // 4 : size // 2, size // 3 :, 2] = 200
    return (img + rng.integers(0, 40, img.shape)).clip(0, 255).astype(np.uint8)


def _save(path: Path, rgb: np.ndarray, subsampling: int = 2) -> Path:
    if path.suffix == ".png":
        Image.fromarray(rgb).save(path)
    else:
        Image.fromarray(rgb).save(path, quality=90, subsampling=subsampling)
    return path


def _script_deg(net: nn.Module, restored: Path, gt: Path) -> float:
    """VQFR's calculate_cos_dist.py on two files, step by step with OpenCV and numpy (float64 cosine)."""

    def embed(path: Path) -> np.ndarray:
        gray = cv2.resize(cv2.imread(str(path), 0), (128, 128), interpolation=cv2.INTER_LINEAR)
        x = torch.from_numpy((gray.astype(np.float32) - 127.5) / 127.5)[None, None]
        with torch.no_grad():
            return net(x)[0].double().numpy()

    a, b = embed(restored), embed(gt)
    return math.degrees(math.acos(np.clip(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)), -1, 1)))


@pytest.mark.parametrize("subsampling", [0, 2], ids=["444", "420"])
def test_jpeg_files_give_the_gray_cv2_imread_decodes(tmp_path: Path, subsampling: int) -> None:
    paths = [_save(tmp_path / f"{i}.jpg", _face_like(40 + 8 * i, i), subsampling) for i in range(3)]
    data = ScoredImages([(p.name, p, p, p) for p in paths])
    differs = 0
    for i, path in enumerate(paths):
        item = data[i]
        expected = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        for key in ("pred_gray", "target_gray"):
            assert item[key].dtype == torch.uint8 and np.array_equal(item[key].numpy(), expected)
        assert item["pred_gray"].shape == item["pred"].shape[-2:]
        # the RGB path's gray (libpng's conversion of the decoded colours) is not what the script reads
        rgb = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)[None]
        via_rgb = arcface_preprocess(rgb, value_range=(0, 255))
        differs += int(not torch.equal(via_rgb, arcface_input_from_gray(torch.from_numpy(expected)[None])))
    assert differs > 0


def test_png_files_give_no_file_gray(tmp_path: Path) -> None:
    path = _save(tmp_path / "a.png", _face_like(32, 0))
    assert set(ScoredImages([("a.png", path, path, path)])[0]) == {"name", "pred", "target"}


def _score_files(tmp_path: Path, rows: list, net: nn.Module) -> dict[str, float]:
    suite = MetricSuite(["deg"], random_networks=True)
    suite.metrics["deg"].net = net
    module = ScoreModule(suite, tmp_path / "scores")
    data = ScoredImages(rows)
    module.test_step(group_by_size([data[i] for i in range(len(data))]), 0)
    return {r["name"]: r["deg"] for r in module.per_image}


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_scored_files_match_the_script_on_jpeg_and_png(tmp_path: Path, suffix: str) -> None:
    torch.manual_seed(0)
    net = ResNetFace18().eval()
    rows = []
    for i in range(2):
        restored = _save(tmp_path / f"r{i}{suffix}", _face_like(48, i))
        gt = _save(tmp_path / f"g{i}{suffix}", _face_like(48, 10 + i))
        rows.append((f"{i}{suffix}", restored, gt, gt))
    scores = _score_files(tmp_path, rows, net)
    for name, restored, gt, _ in rows:
        assert scores[name] == pytest.approx(_script_deg(net, restored, gt), abs=1e-3)  # float32 net, ~1e-4 deg


def test_output_resized_to_its_ground_truth_uses_the_rgb_gray(tmp_path: Path) -> None:
    """A JPEG output at another size is resized before scoring; its file's gray is then not the scored image."""
    torch.manual_seed(0)
    net = ResNetFace18().eval()
    restored = _save(tmp_path / "r.jpg", _face_like(32, 1))
    gt = _save(tmp_path / "g.jpg", _face_like(48, 2))
    got = _score_files(tmp_path, [("x", restored, gt, gt)], net)["x"]
    item = ScoredImages([("x", restored, gt, gt)])[0]
    metric = IdentityDistance(network=net)
    resized = resize(item["pred"][None], 48).clamp(-1, 1)
    metric.update(resized, item["target"][None], target_gray=item["target_gray"][None])
    assert got == pytest.approx(float(metric.last_values[0]), abs=1e-9)


def test_gray_must_match_the_images() -> None:
    m = IdentityDistance(network=AngleStub())
    with pytest.raises(ValueError, match="do not match"):
        m.update(flat([10]), flat([20]), preds_gray=torch.zeros(1, 16, 16, dtype=torch.uint8))
