"""Frechet distance, streaming feature statistics, and the two reference-statistics file formats."""

from __future__ import annotations

import io
import pickle
import re

import numpy as np
import pytest
import scipy.linalg
import torch

from lightning_dr2.metrics.frechet import FeatureStats, frechet_distance, load_stats, save_stats


def gaussian_features(n: int, dim: int, seed: int, shift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(dim, dim)) / np.sqrt(dim)
    return rng.normal(size=(n, dim)) @ mixing + shift + rng.normal(size=dim) * 0.1


@pytest.fixture(scope="module")
def two_sets() -> tuple[np.ndarray, np.ndarray]:
    return gaussian_features(500, 64, 0), gaussian_features(400, 64, 1, shift=0.3)


def test_matches_direct_formula(two_sets):
    a, b = two_sets
    mu1, s1, mu2, s2 = a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False)
    # independent route: Tr sqrt(S1 S2) = Tr sqrt(S1^1/2 S2 S1^1/2), the symmetric form, via eigenvalues
    root1 = scipy.linalg.sqrtm(s1).real
    eig = np.linalg.eigvalsh(root1 @ s2 @ root1)
    expected = (
        np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.sum(np.sqrt(np.clip(eig, 0, None)))
    )
    ours = frechet_distance(mu1, s1, mu2, s2)
    assert isinstance(ours, float)
    assert ours == pytest.approx(expected, rel=1e-8)
    assert ours == pytest.approx(frechet_distance(mu2, s2, mu1, s1), rel=1e-8)  # symmetric
    assert ours > 0


def test_zero_for_identical_stats(two_sets):
    a, _ = two_sets
    mu, sigma = a.mean(0), np.cov(a, rowvar=False)
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-8


@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")
def test_singular_covariances_stay_finite():
    """Rank-deficient covariances (fewer samples than dimensions): finite result, never NaN."""
    a, b = gaussian_features(10, 32, 2), gaussian_features(10, 32, 3)
    value = frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
    assert np.isfinite(value) and value > 0


def test_eps_offset_fallback(monkeypatch, two_sets):
    """pytorch-fid's fallback: a non-finite sqrtm is retried with eps added to both diagonals.
    Recent SciPy rarely returns non-finite values, so force the first call to."""
    a, b = two_sets
    mu1, s1, mu2, s2 = a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False)
    real_sqrtm, calls = scipy.linalg.sqrtm, []

    def flaky_sqrtm(matrix):
        calls.append(matrix)
        return np.full_like(matrix, np.nan) if len(calls) == 1 else real_sqrtm(matrix)

    monkeypatch.setattr(scipy.linalg, "sqrtm", flaky_sqrtm)
    with pytest.warns(UserWarning, match="singular"):
        value = frechet_distance(mu1, s1, mu2, s2, eps=1e-3)
    offset = np.eye(64) * 1e-3
    np.testing.assert_allclose(calls[1], (s1 + offset) @ (s2 + offset))
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2) - 2 * np.trace(real_sqrtm(calls[1]).real)
    assert value == pytest.approx(expected, rel=1e-10)


def test_large_imaginary_component_raises(monkeypatch):
    monkeypatch.setattr(scipy.linalg, "sqrtm", lambda m: np.eye(len(m)) * (1 + 0.1j))
    with pytest.raises(ValueError, match="[Ii]maginary"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(3))
    monkeypatch.setattr(scipy.linalg, "sqrtm", lambda m: np.eye(len(m)) * (1 + 1e-6j))
    assert frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(3)) == pytest.approx(0.0)


def test_shape_mismatch():
    with pytest.raises(ValueError, match="shapes"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match="covariances"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(2))


def test_feature_stats_streaming_equals_numpy(two_sets):
    a, _ = two_sets
    stats = FeatureStats()
    for start in range(0, len(a), 77):  # uneven batches, one numpy, one torch float32 view
        batch = a[start : start + 77]
        stats.update(batch if start % 2 else torch.from_numpy(batch))
    assert stats.count == len(a)
    np.testing.assert_allclose(stats.mean(), a.mean(0), rtol=0, atol=1e-10)
    np.testing.assert_allclose(stats.cov(), np.cov(a, rowvar=False), rtol=0, atol=1e-10)
    assert stats.mean().dtype == np.float64 and stats.cov().dtype == np.float64


def test_feature_stats_merge_and_from_sums(two_sets):
    a, _ = two_sets
    left, right, empty = FeatureStats(), FeatureStats(), FeatureStats()
    left.update(a[:123])
    right.update(a[123:].reshape(-1, 64, 1, 1))  # pool3-shaped batches are flattened
    left.merge(right).merge(empty)
    np.testing.assert_allclose(left.cov(), np.cov(a, rowvar=False), rtol=0, atol=1e-10)
    rebuilt = FeatureStats.from_sums(left.count, left.sum, left.outer)
    np.testing.assert_allclose(rebuilt.mean(), a.mean(0), rtol=0, atol=1e-12)
    fresh = FeatureStats().merge(left)
    assert fresh.count == len(a) and fresh.sum is not left.sum


def test_feature_stats_errors():
    stats = FeatureStats(dim=4)
    with pytest.raises(ValueError, match="empty"):
        stats.mean()
    with pytest.raises(ValueError, match="dimension"):
        stats.update(np.zeros((2, 5)))
    stats.update(np.zeros((1, 4)))
    with pytest.raises(ValueError, match="at least 2"):
        stats.cov()
    with pytest.raises(ValueError, match="NaN"):
        stats.update(np.full((2, 4), np.nan))
    with pytest.raises(ValueError, match="N x D"):
        stats.update(np.zeros(4))


@pytest.mark.parametrize("name", ["ref.npz", "ref.pth"])
def test_save_load_round_trip(tmp_path, two_sets, name):
    a, _ = two_sets
    mu, sigma = a.mean(0), np.cov(a, rowvar=False)
    path = save_stats(tmp_path / "sub" / name, mu, sigma, count=len(a))
    loaded = load_stats(path)
    np.testing.assert_array_equal(loaded.mu, mu)
    np.testing.assert_array_equal(loaded.sigma, sigma)
    assert loaded.count == len(a) and loaded.mu.dtype == np.float64
    mu2, sigma2, count = load_stats(path)  # unpacks like a tuple
    assert count == len(a)


def test_pytorch_fid_npz_without_count(tmp_path):
    path = tmp_path / "fid_stats.npz"
    np.savez(path, mu=np.zeros(3, np.float32), sigma=np.eye(3, dtype=np.float32))
    loaded = load_stats(path)
    assert loaded.count is None and loaded.sigma.dtype == np.float64


def basicsr_file(mean: np.ndarray, cov: np.ndarray, numpy1_names: bool) -> bytes:
    """The bytes of BasicSR's `inception_FFHQ_512-*.pth`: torch.save(dict(name, size, mean, cov),
    _use_new_zipfile_serialization=False). The released file was pickled under numpy 1.x, whose arrays
    reference `numpy.core.multiarray._reconstruct`; protocol-2 GLOBAL opcodes are plain text lines, so
    renaming numpy 2's `numpy._core` reproduces that file byte-compatibly."""
    buf = io.BytesIO()
    torch.save(dict(name="FFHQ", size=512, mean=mean, cov=cov), buf, _use_new_zipfile_serialization=False)
    data = buf.getvalue()
    if numpy1_names:
        data = data.replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
        assert re.search(rb"cnumpy\.core\.multiarray\n_reconstruct\n", data)
    return data


@pytest.mark.parametrize("numpy1_names", [True, False])
def test_load_basicsr_format(tmp_path, two_sets, numpy1_names):
    a, _ = two_sets
    mu, sigma = a.mean(0), np.cov(a, rowvar=False)
    path = tmp_path / "inception_FFHQ_512-f7b384ab.pth"
    path.write_bytes(basicsr_file(mu, sigma, numpy1_names))
    with pytest.raises(pickle.UnpicklingError):  # plain weights_only refuses numpy arrays: why we allowlist
        torch.load(path, weights_only=True)
    loaded = load_stats(path)
    np.testing.assert_array_equal(loaded.mu, mu)
    np.testing.assert_array_equal(loaded.sigma, sigma)
    assert loaded.count is None


def test_unknown_and_bad_files_name_the_file(tmp_path):
    text = tmp_path / "stats.txt"
    text.write_text("mu sigma")
    with pytest.raises(ValueError, match="stats.txt"):
        load_stats(text)
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        load_stats(tmp_path / "missing.npz")
    wrong_keys = tmp_path / "wrong.npz"
    np.savez(wrong_keys, features=np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"wrong\.npz.*mean/cov"):
        load_stats(wrong_keys)
    not_dict = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), not_dict)
    with pytest.raises(ValueError, match="tensor.pth"):
        load_stats(not_dict)
    evil = tmp_path / "evil.pth"
    torch.save({"mean": np.zeros(2), "cov": np.eye(2), "obj": re.compile("x")}, evil)
    with pytest.raises(ValueError, match="evil.pth"):
        load_stats(evil)  # weights_only refuses arbitrary globals
    with pytest.raises(ValueError, match="npz or .pth"):
        save_stats(tmp_path / "x.json", np.zeros(2), np.eye(2))
