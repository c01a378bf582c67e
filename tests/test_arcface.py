"""resnet_face18 for the identity metric: key manifest, forward, loading, VQFR preprocessing vs OpenCV."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
from conftest import fixture_path

from lightning_dr2.nets.arcface import ResNetFace18, arcface_preprocess, load_arcface
from lightning_dr2.nets.loading import WeightsError


@pytest.fixture(scope="module")
def model() -> ResNetFace18:
    torch.manual_seed(0)
    return ResNetFace18().eval()


def test_state_dict_matches_key_manifest(model: ResNetFace18) -> None:
    path = fixture_path("arcface_resnet18_keys.json")
    manifest = json.loads(path.read_text())
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert list(ours) == list(manifest["state_dict"])
    assert ours == manifest["state_dict"]
    assert sum(p.numel() for p in model.parameters()) == manifest["num_params"]


def test_forward_shape(model: ResNetFace18) -> None:
    with torch.no_grad():
        out = model(torch.rand(2, 1, 128, 128) * 2 - 1)
    assert out.shape == (2, 512) and torch.isfinite(out).all()


def test_forward_rejects_wrong_input(model: ResNetFace18) -> None:
    with pytest.raises(ValueError, match="128"):
        model(torch.zeros(1, 3, 128, 128))
    with pytest.raises(ValueError, match="128"):
        model(torch.zeros(1, 1, 112, 112))


@pytest.mark.parametrize("prefix", ["module.", ""])
def test_load_with_and_without_dataparallel_prefix(model: ResNetFace18, tmp_path, prefix: str) -> None:
    path = tmp_path / "resnet18_110.pth"
    torch.save({prefix + k: v for k, v in model.state_dict().items()}, path)
    loaded = load_arcface(path)
    assert not loaded.training
    assert not any(p.requires_grad for p in loaded.parameters())
    expected = model.state_dict()
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, expected[key]), key


def test_load_wrong_file_raises(tmp_path) -> None:
    other = tmp_path / "other.pth"
    torch.save(torch.nn.Linear(4, 2).state_dict(), other)
    with pytest.raises(WeightsError, match="missing keys"):
        load_arcface(other)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="garbage.pth"):
        load_arcface(garbage)
    with pytest.raises(WeightsError, match="not found"):
        load_arcface(tmp_path / "missing.pth")


def _vqfr_reference(rgb_u8: np.ndarray, gray: str, tmp_path) -> np.ndarray:
    """What VQFR's calculate_cos_dist.py feeds the network, computed with OpenCV itself (B, 128, 128)."""
    out = []
    for img in rgb_u8:
        bgr = np.ascontiguousarray(img[..., ::-1])
        if gray == "imread":
            path = str(tmp_path / "face.png")
            cv2.imwrite(path, bgr)
            g = cv2.imread(path, 0)
        else:
            g = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
        out.append(cv2.resize(g, (128, 128), interpolation=cv2.INTER_LINEAR))
    return (np.stack(out).astype(np.float32) - 127.5) / 127.5


@pytest.mark.parametrize("gray", ["imread", "cvtcolor"])
@pytest.mark.parametrize("size", [(512, 512), (256, 256), (128, 128), (64, 64), (100, 150), (333, 517)])
def test_preprocess_matches_opencv(tmp_path, gray: str, size: tuple[int, int]) -> None:
    rng = np.random.default_rng(sum(size))
    rgb = rng.integers(0, 256, (2, *size, 3), dtype=np.uint8)
    expected = _vqfr_reference(rgb, gray, tmp_path)
    u8 = torch.from_numpy(rgb).permute(0, 3, 1, 2)
    for images, value_range in [
        (u8.float() / 127.5 - 1, (-1.0, 1.0)),
        (u8.float() / 255, (0.0, 1.0)),
        (u8, (0, 255)),
    ]:
        out = arcface_preprocess(images, value_range=value_range, gray=gray)
        assert out.shape == (2, 1, 128, 128) and out.dtype == torch.float32
        np.testing.assert_array_equal(out[:, 0].numpy(), expected)


@pytest.mark.parametrize("gray", ["imread", "cvtcolor"])
def test_gray_conversion_is_exact_on_all_colours(tmp_path, gray: str) -> None:
    """Every 8-bit R, G level against every 8th B level (128x128 images: the resize is the identity)."""
    r, g, b = np.meshgrid(np.arange(256), np.arange(256), np.arange(0, 256, 8), indexing="ij")
    rgb = np.stack([r, g, b], axis=-1).reshape(-1, 128, 128, 3).astype(np.uint8)
    expected = _vqfr_reference(rgb, gray, tmp_path)
    out = arcface_preprocess(torch.from_numpy(rgb).permute(0, 3, 1, 2), value_range=(0, 255), gray=gray)
    np.testing.assert_array_equal(out[:, 0].numpy(), expected)


def test_preprocess_clamps_out_of_range_values() -> None:
    x = torch.full((1, 3, 64, 64), 3.0)
    torch.testing.assert_close(arcface_preprocess(x, value_range=(-1, 1)), torch.ones(1, 1, 128, 128))
    torch.testing.assert_close(arcface_preprocess(-x, value_range=(-1, 1)), -torch.ones(1, 1, 128, 128))


def test_preprocess_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="RGB"):
        arcface_preprocess(torch.zeros(1, 1, 64, 64), value_range=(0, 1))
    with pytest.raises(ValueError, match="RGB"):
        arcface_preprocess(torch.zeros(3, 64, 64), value_range=(0, 1))
    with pytest.raises(ValueError, match="value_range"):
        arcface_preprocess(torch.zeros(1, 3, 64, 64), value_range=(1, 0))
    with pytest.raises(ValueError, match="gray"):
        arcface_preprocess(torch.zeros(1, 3, 64, 64), value_range=(0, 1), gray="luma")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="NaN"):
        arcface_preprocess(torch.full((1, 3, 64, 64), float("nan")), value_range=(0, 1))
