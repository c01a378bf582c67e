"""Phi_N (lightning_dr2.dr2.lowpass): ILVR/DR2 compatibility, batching, dtypes, filter properties, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import load_fixture
from contract import assert_fp32_close

from lightning_dr2.dr2.lowpass import lowpass, lowpass_matrices, resize_matrix


@pytest.fixture(scope="module")
def fixture() -> dict:
    return load_fixture("dr2_lowpass.pt")


@pytest.mark.parametrize("n", [2, 4, 8, 16])
def test_matches_ilvr_resizer_fixture(fixture: dict, n: int) -> None:
    x, expected = fixture["x"], fixture["lowpass"][n]
    out = lowpass(x, n)
    assert out.shape == x.shape and out.dtype == torch.float32
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def _numpy_ilvr_resize_1d(signal: np.ndarray, scale: float) -> np.ndarray:
    """An independent gather-style 1-D resize (taps + mirror indices), the way the ILVR resizer applies it."""
    n_in = signal.shape[0]
    n_out = round(n_in * scale)
    aa = scale < 1
    width = 4.0 / scale if aa else 4.0
    out = np.zeros(n_out)
    for i in range(n_out):
        centre = (i + 1) / scale + 0.5 * (1 - 1 / scale)
        taps = np.floor(centre - width / 2) + np.arange(np.ceil(width) + 2) - 1
        dist = (centre - taps - 1) * (scale if aa else 1.0)
        a = np.abs(dist)
        near = (1.5 * a**3 - 2.5 * a**2 + 1) * (a <= 1)
        far = (-0.5 * a**3 + 2.5 * a**2 - 4 * a + 2) * ((a > 1) & (a <= 2))
        w = near + far
        w = w / w.sum()
        idx = np.mod(taps.astype(int), 2 * n_in)
        idx = np.where(idx < n_in, idx, 2 * n_in - 1 - idx)  # symmetric: edge pixel repeated
        out[i] = (w * signal[idx]).sum()
    return out


@pytest.mark.parametrize(("length", "n"), [(12, 4), (20, 2), (48, 3), (16, 16)])
def test_resize_matrix_matches_gather_reference(length: int, n: int) -> None:
    signal = np.random.default_rng(0).standard_normal(length)
    down = resize_matrix(length, length // n, 1.0 / n).numpy() @ signal
    np.testing.assert_allclose(down, _numpy_ilvr_resize_1d(signal, 1.0 / n), atol=1e-12)
    up = resize_matrix(length // n, length, float(n)).numpy() @ down
    np.testing.assert_allclose(up, _numpy_ilvr_resize_1d(down, float(n)), atol=1e-12)


def test_rows_sum_to_one_and_matrices_are_cached() -> None:
    p_h, p_w_t = lowpass_matrices(32, 16, 4, torch.device("cpu"), torch.float64)
    assert p_h.shape == (32, 32) and p_w_t.shape == (16, 16)
    torch.testing.assert_close(p_h.sum(dim=1), torch.ones(32, dtype=torch.float64))
    assert lowpass_matrices(32, 16, 4, torch.device("cpu"), torch.float64)[0] is p_h


@pytest.mark.cross_batch
def test_batch_images_and_channels_are_independent() -> None:
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    batched = lowpass(x, 4)
    for b in range(4):
        assert_fp32_close(batched[b : b + 1], lowpass(x[b : b + 1], 4), msg=f"image {b}")
    per_channel = torch.cat([lowpass(x[:, c : c + 1], 4) for c in range(3)], dim=1)
    assert_fp32_close(batched, per_channel)


@pytest.mark.cross_batch
def test_non_square_and_other_channel_counts() -> None:
    x = torch.randn(2, 6, 16, 40)
    out = lowpass(x, 8)
    assert out.shape == x.shape
    # separable: filtering rows then columns equals the 2-D filter
    assert_fp32_close(out[0, 0], lowpass(x[:1, :1], 8)[0, 0])  # another batch shape: the fp32 bound


def test_n_equal_one_returns_input_unchanged() -> None:
    x = torch.randn(1, 3, 8, 8)
    assert lowpass(x, 1) is x


def test_dtypes(fixture: dict) -> None:
    x = fixture["x"]
    ref = lowpass(x, 4)
    out64 = lowpass(x.double(), 4)
    assert out64.dtype == torch.float64
    torch.testing.assert_close(out64.float(), ref, atol=1e-6, rtol=0)
    out_bf16 = lowpass(x.bfloat16(), 4)
    assert out_bf16.dtype == torch.bfloat16
    torch.testing.assert_close(out_bf16.float(), ref, atol=2e-2, rtol=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out_autocast = lowpass(x, 4)
    assert out_autocast.dtype == torch.float32
    torch.testing.assert_close(out_autocast, ref)


def test_constant_image_is_preserved() -> None:
    x = torch.full((2, 3, 64, 32), 0.37)
    for n in (2, 4, 8, 16, 32):
        torch.testing.assert_close(lowpass(x, n), x, atol=1e-6, rtol=0)


def test_removes_high_frequencies() -> None:
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def high_energy(img: torch.Tensor, cutoff: int) -> float:
        spec = torch.fft.fftshift(torch.fft.fft2(img), dim=(-2, -1)).abs() ** 2
        yy, xx = torch.meshgrid(torch.arange(64) - 32, torch.arange(64) - 32, indexing="ij")
        mask = (yy.abs() > cutoff) | (xx.abs() > cutoff)
        return float(spec[..., mask].sum())

    for n in (2, 4, 8):
        cutoff = 32 // n
        assert high_energy(lowpass(x, n), cutoff) < 0.05 * high_energy(x, cutoff)
    # coarser N removes more
    assert lowpass(x, 8).std() < lowpass(x, 4).std() < lowpass(x, 2).std() < x.std()


@pytest.mark.parametrize("bad_n", [0, -2, 3, 5, 2.0, 4.5, "4", None, True, torch.tensor(4)])
def test_bad_n_raises(bad_n: object) -> None:
    x = torch.zeros(1, 3, 32, 32)
    with pytest.raises(ValueError, match="N"):
        lowpass(x, bad_n)  # type: ignore[arg-type]


def test_non_divisor_names_n_and_size() -> None:
    with pytest.raises(ValueError, match=r"N=3.*32x32"):
        lowpass(torch.zeros(1, 3, 32, 32), 3)
    with pytest.raises(ValueError, match=r"N=4.*32x6"):
        lowpass(torch.zeros(1, 3, 32, 6), 4)


@pytest.mark.parametrize("shape", [(3, 32, 32), (32, 32), (1, 1, 3, 32, 32)])
def test_bad_shape_raises(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="4-D"):
        lowpass(torch.zeros(shape), 2)


def test_non_tensor_and_integer_inputs_raise() -> None:
    with pytest.raises(ValueError, match="4-D"):
        lowpass(np.zeros((1, 3, 8, 8)), 2)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="floating"):
        lowpass(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), 2)
