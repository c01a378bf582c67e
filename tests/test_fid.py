"""FID InceptionV3 (key names, FID block variants, resizing, fp32) and the FID metric / fid-stats (CPU, random
weights; most metric tests use a tiny deterministic feature network so they stay fast and exact)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from contract import assert_fp32_close
from PIL import Image
from torch import Tensor, nn

from lightning_dr2.image_io import to_uint8
from lightning_dr2.metrics.fid import FID, compute_fid_stats, uint8_to_network_input
from lightning_dr2.metrics.frechet import FIDStats, load_stats, save_stats
from lightning_dr2.nets.inception import (
    FID_WEIGHTS_NAME,
    FIDInceptionA,
    FIDInceptionE2,
    FIDInceptionV3,
    load_fid_inception,
)


@pytest.fixture(scope="module")
def inception() -> FIDInceptionV3:
    torch.manual_seed(0)
    return FIDInceptionV3().eval()


class TinyFeatures(nn.Module):
    """A fixed random nonlinear map (B, 3, H, W) -> (B, 6); records the inputs it saw."""

    feature_dim = 6

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(1)
        self.register_buffer("proj", torch.randn(48, self.feature_dim, generator=gen))
        self.seen: list[Tensor] = []

    def forward(self, x: Tensor) -> Tensor:
        self.seen.append(x.detach().clone())
        pooled = F.adaptive_avg_pool2d(x.float(), 4).flatten(1)
        return torch.tanh(pooled @ self.proj)


def images(n: int, seed: int, size: int = 16) -> Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# ----------------------------------------------------------------------------------------------------
# network


def test_state_dict_keys_match_torchvision_inception3(inception: FIDInceptionV3) -> None:
    # pytorch-fid loads pt_inception strictly into torchvision's Inception3(num_classes=1008, no aux)
    tv = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False, num_classes=1008)
    expected = {k: tuple(v.shape) for k, v in tv.state_dict().items() if not k.startswith("AuxLogits")}
    ours = {k: tuple(v.shape) for k, v in inception.state_dict().items()}
    assert ours == expected
    assert ours["fc.weight"] == (1008, 2048) and "Conv2d_1a_3x3.conv.weight" in ours


def test_features_shape_any_input_size(inception: FIDInceptionV3) -> None:
    x = images(2, 0, size=40)
    with torch.no_grad():
        f = inception(x)
        # the network resizes to 299 itself: bilinear, align_corners=False, no antialias
        f299 = inception(F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False))
        g = inception(images(1, 1, size=37)[..., :29])  # non-square
    assert f.shape == (2, 2048) and g.shape == (1, 2048)
    assert f.dtype == torch.float32 and torch.isfinite(f).all()
    torch.testing.assert_close(f, f299, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(f[0], f[1])


def test_fp32_under_autocast(inception: FIDInceptionV3) -> None:
    x = images(1, 2, size=24)
    with torch.no_grad():
        ref = inception(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = inception(x.bfloat16())
    assert out.dtype == torch.float32
    # the only difference allowed is the bf16 rounding of the input itself
    with torch.no_grad():
        torch.testing.assert_close(out, inception(x.bfloat16().float()))
    assert torch.isfinite(ref).all()


def test_fid_block_variants() -> None:
    torch.manual_seed(0)
    x = torch.randn(1, 192, 9, 9)
    a = FIDInceptionA(192, pool_features=32).eval()
    with torch.no_grad():
        pool_branch = a(x)[:, -32:]
        expected = a.branch_pool(F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False))
        with_pad = a.branch_pool(F.avg_pool2d(x, 3, stride=1, padding=1))
    torch.testing.assert_close(pool_branch, expected)
    assert not torch.allclose(pool_branch, with_pad)  # corners/edges differ from torchvision's block

    x = torch.randn(1, 2048, 8, 8)
    e = FIDInceptionE2(2048).eval()
    with torch.no_grad():
        pool_branch = e(x)[:, -192:]
        expected = e.branch_pool(F.max_pool2d(x, 3, stride=1, padding=1))
    torch.testing.assert_close(pool_branch, expected)


def test_load_fid_inception_from_path(tmp_path, inception: FIDInceptionV3) -> None:
    state = {k: v for k, v in inception.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / FID_WEIGHTS_NAME
    torch.save(state, path)  # a converted file without BatchNorm counters must still load
    model = load_fid_inception(path)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    for k, v in state.items():
        assert torch.equal(model.state_dict()[k], v), k


def test_missing_weights_names_the_file(tmp_path) -> None:
    """The suite's isolation fixture hides every weights folder; an empty --weights-dir adds nothing."""
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=FID_WEIGHTS_NAME):
        load_fid_inception(weights_dir=empty)
    with pytest.raises(FileNotFoundError, match=FID_WEIGHTS_NAME):
        FID(None, weights_dir=empty)


# ----------------------------------------------------------------------------------------------------
# metric


def test_fid_against_own_stats_is_zero() -> None:
    x = images(20, 3)
    m = FID(None, network=TinyFeatures())
    m.update(x)
    stats = m.stats()
    assert stats.count == 20 and stats.mu.shape == (6,) and stats.sigma.shape == (6, 6)
    fid = FID(stats, network=TinyFeatures())
    fid.update(x)
    value = fid.compute()
    assert value.dtype == torch.float64 and abs(float(value)) < 1e-8
    other = FID(stats, network=TinyFeatures())
    other.update(images(20, 4) * 0.5)
    assert float(other.compute()) > 1e-3


def test_stats_match_numpy() -> None:
    x = images(12, 5)
    net = TinyFeatures()
    m = FID(None, network=net, quantize=False)
    m.update(x)
    feats = net(x).double().numpy()
    mu, sigma, count = m.stats()
    np.testing.assert_allclose(mu, feats.mean(0), rtol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(feats, rowvar=False), rtol=1e-10, atol=1e-14)
    assert count == 12


@pytest.mark.cross_batch
def test_two_updates_equal_one() -> None:
    x = images(10, 6)
    one, two = FID(None, network=TinyFeatures()), FID(None, network=TinyFeatures())
    one.update(x)
    two.update(x[:4])
    two.update(x[4:])
    assert one.count == two.count == 10
    # features of a batch of 10 vs batches of 4 and 6: equal to fp32 rounding (the contract), not bitwise
    assert_fp32_close(one.feature_sum, two.feature_sum)
    assert_fp32_close(one.feature_outer, two.feature_outer)


def test_merged_states_equal_single_process() -> None:
    ref = FIDStats(np.zeros(6), np.eye(6), None)
    a, b = images(5, 7), images(7, 8)
    single = FID(ref, network=TinyFeatures())
    single.update(a)
    single.update(b)
    rank0, rank1 = FID(ref, network=TinyFeatures()), FID(ref, network=TinyFeatures())
    rank0.update(a)
    rank1.update(b)
    rank0.merge_state(rank1)  # what the all-reduce with dist_reduce_fx="sum" does
    # Same machine, same batches, same summation order: bitwise is part of the contract here.
    for name in ("feature_sum", "feature_outer", "count"):
        assert torch.equal(getattr(single, name), getattr(rank0, name)), name
    assert float(single.compute()) == float(rank0.compute())


def test_quantize_feeds_png_levels() -> None:
    x = images(3, 9)
    net = TinyFeatures()
    FID(None, network=net).update(x)
    expected = uint8_to_network_input(to_uint8(x))
    assert torch.equal(net.seen[-1], expected)
    levels = (net.seen[-1] * 0.5 + 0.5) * 255
    torch.testing.assert_close(levels, levels.round(), rtol=0, atol=1e-4)

    FID(None, network=net, quantize=False).update(x)
    assert torch.equal(net.seen[-1], x)  # [-1, 1] passes through untouched
    FID(None, network=net, quantize=False, value_range=(0, 1)).update(x * 0.5 + 0.5)
    torch.testing.assert_close(net.seen[-1], x)
    u8 = to_uint8(x)
    FID(None, network=net, value_range=(0, 255)).update(u8.float())
    assert torch.equal(net.seen[-1], expected)


def test_errors() -> None:
    m = FID(None, network=TinyFeatures())
    m.update(images(1, 10))
    with pytest.raises(ValueError, match="at least 2"):
        m.stats()
    m.update(images(1, 11))
    with pytest.raises(ValueError, match="reference"):
        m.compute()
    with pytest.raises(ValueError, match="dimension"):
        FID(FIDStats(np.zeros(2048), np.eye(2048), None), network=TinyFeatures())
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        m.update(torch.zeros(2, 1, 8, 8))


def test_reference_from_files(tmp_path) -> None:
    x = images(8, 12)
    m = FID(None, network=TinyFeatures())
    m.update(x)
    mu, sigma, count = m.stats()
    for name in ("stats.npz", "inception_FFHQ_512-like.pth"):  # ours, BasicSR's dict(mean, cov)
        path = save_stats(tmp_path / name, mu, sigma, count)
        fid = FID(path, network=TinyFeatures())
        fid.update(x)
        assert abs(float(fid.compute())) < 1e-8


def test_real_inception_end_to_end(inception: FIDInceptionV3) -> None:
    m = FID(None, network=inception)
    m.update(images(2, 13, size=32))
    mu, sigma, count = m.stats()
    assert mu.shape == (2048,) and sigma.shape == (2048, 2048) and count == 2
    assert np.isfinite(sigma).all()


# ----------------------------------------------------------------------------------------------------
# fid-stats


@pytest.mark.cross_batch
def test_compute_fid_stats_folder(tmp_path) -> None:
    rng = np.random.default_rng(0)
    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    arrays = [rng.integers(0, 256, (h, h, 3), dtype=np.uint8) for h in (16, 16, 20, 16, 20)]
    for i, arr in enumerate(arrays):
        Image.fromarray(arr).save(folder / ("sub" if i == 4 else "") / f"{i}.png")
    (folder / "broken.png").write_bytes(b"not a png")

    out = tmp_path / "stats.npz"
    result = compute_fid_stats(folder, out, batch_size=2, device="cpu", network=TinyFeatures(), progress=False)
    assert list(result.skipped) == [str(folder / "broken.png")]
    loaded = load_stats(out)
    assert loaded.count == 5 and result.stats.count == 5 and result.path == out
    np.testing.assert_array_equal(loaded.mu, result.stats.mu)

    # the same statistics as feeding the uint8 images to the metric one by one (other batch shapes: the
    # contract's fp32 bound, not bitwise)
    direct = FID(None, network=TinyFeatures())
    for arr in arrays:
        direct.update_uint8(torch.from_numpy(arr).permute(2, 0, 1)[None])
    assert_fp32_close(loaded.mu, direct.stats().mu)
    assert_fp32_close(loaded.sigma, direct.stats().sigma)

    # sequential reading with another batch size gives the same statistics
    again = compute_fid_stats(
        folder, tmp_path / "b.npz", batch_size=3, device="cpu", network=TinyFeatures(), progress=False, workers=0
    )
    assert_fp32_close(again.stats.mu, loaded.mu)
    assert_fp32_close(again.stats.sigma, loaded.sigma)


def test_compute_fid_stats_needs_two_images(tmp_path) -> None:
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
    with pytest.raises(ValueError, match="at least 2"):
        compute_fid_stats(tmp_path, tmp_path / "s.npz", device="cpu", network=TinyFeatures(), progress=False)
