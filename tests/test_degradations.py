"""The degradation model: determinism, each parameter's effect, kernels, manifests, bad input."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest

from lightning_dr2.datasets.degradations import (
    DegradationParams,
    DegradationSpec,
    degrade,
    degrade_with_seed,
    gaussian_kernel,
)


@pytest.fixture(scope="module")
def face() -> np.ndarray:
    """A 96x96 RGB test image with edges, gradients and fine texture (stands in for a face crop)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:96, 0:96]
    img = np.stack([xx * 2.5, yy * 2.5, 128 + 60 * np.sin(xx / 3.0) * np.cos(yy / 5.0)], axis=-1)
    img[30:66, 30:66] = (230, 40, 90)
    img += rng.normal(0, 12, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def clean(**overrides) -> DegradationParams:
    """Almost-identity parameters; tests change one thing at a time."""
    base = dict(kernel="iso", sigma_x=1e-3, sigma_y=1e-3, scale=1.0, noise_sigma=0.0, jpeg_quality=None)
    base.update(overrides)
    return DegradationParams(**base)


def high_freq_energy(img: np.ndarray) -> float:
    return float(np.mean(cv2.Laplacian(img.astype(np.float64), cv2.CV_64F) ** 2))


def err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))


def test_same_seed_same_bytes_different_seed_differs(face):
    spec = DegradationSpec()
    lq1, p1 = degrade_with_seed(face, spec, 1234)
    lq2, p2 = degrade_with_seed(face, spec, 1234)
    assert lq1.tobytes() == lq2.tobytes() and p1 == p2
    lq3, p3 = degrade_with_seed(face, spec, 1235)
    assert p3 != p1 and lq3.tobytes() != lq1.tobytes()
    assert lq1.dtype == np.uint8 and lq1.shape == face.shape


def test_noise_is_reproducible_from_params_alone(face):
    params = clean(noise_sigma=10.0, noise_seed=7)
    a, b = degrade(face, params), degrade(face, DegradationParams.from_dict(params.to_dict()))
    assert a.tobytes() == b.tobytes()
    assert degrade(face, clean(noise_sigma=10.0, noise_seed=8)).tobytes() != a.tobytes()
    with pytest.raises(ValueError, match="noise_seed"):
        degrade(face, clean(noise_sigma=10.0))


def test_sample_respects_ranges():
    spec = DegradationSpec(scale_range=4, noise_range=(0, 5), jpeg_range=(70, 80), interpolations=("area",))
    rng = np.random.default_rng(3)
    samples = [spec.sample(rng) for _ in range(300)]
    assert {p.kernel for p in samples} == {"iso", "aniso"}
    assert all(p.scale == 4.0 and p.interpolation == "area" for p in samples)
    assert all(0.1 <= p.sigma_x <= 10 and 0.1 <= p.sigma_y <= 10 and 0 <= p.noise_sigma <= 5 for p in samples)
    assert {p.jpeg_quality for p in samples} == set(range(70, 81))  # integers, both ends included
    assert all(p.sigma_x == p.sigma_y and p.rotation == 0 for p in samples if p.kernel == "iso")
    assert not any(p.gray_noise for p in samples)  # GFPGAN default: colour noise only


def test_defaults_are_gfpgan_ranges():
    spec = DegradationSpec()
    assert spec.kernel_size == 41 and spec.kernel_prob == (0.5, 0.5)
    assert spec.sigma_range == (0.1, 10.0) and spec.scale_range == (0.8, 8.0)
    assert spec.noise_range == (0.0, 20.0) and spec.jpeg_range == (60, 100)
    assert spec.interpolations == ("bilinear",)


def test_larger_sigma_is_blurrier(face):
    energies = [high_freq_energy(degrade(face, clean(sigma_x=s, sigma_y=s))) for s in (0.5, 1.5, 4.0)]
    assert energies[0] > energies[1] > energies[2]


def test_more_noise_larger_residual(face):
    stds = [
        np.std(degrade(face, clean(noise_sigma=n, noise_seed=0)).astype(float) - face.astype(float))
        for n in (0.0, 5.0, 20.0)
    ]
    assert stds[0] < 1e-9 < stds[1] < stds[2]
    assert abs(stds[2] - 20.0) < 3.0  # clipping at 0/255 removes a little


def test_gray_noise_is_equal_across_channels():
    flat = np.full((32, 32, 3), 128, np.uint8)
    residual = degrade(flat, clean(noise_sigma=10.0, gray_noise=True, noise_seed=1)).astype(int) - 128
    assert np.abs(residual).max() > 0
    assert (residual[..., 0] == residual[..., 1]).all() and (residual[..., 1] == residual[..., 2]).all()
    colour = degrade(flat, clean(noise_sigma=10.0, gray_noise=False, noise_seed=1)).astype(int) - 128
    assert not (colour[..., 0] == colour[..., 1]).all()


def test_lower_jpeg_quality_larger_error(face):
    errors = [err(degrade(face, clean(jpeg_quality=q)), face) for q in (95, 60, 20)]
    assert errors[0] < errors[1] < errors[2]


def test_jpeg_handles_channel_order(face):
    """JPEG of an RGB image must come back RGB (OpenCV encodes BGR); the red square must stay red."""
    out = degrade(face, clean(jpeg_quality=90))
    r, g, b = out[40:56, 40:56].reshape(-1, 3).mean(0)
    assert r > 200 and g < 70 and b > 60


def test_near_identity(face):
    assert degrade(face, clean()).tobytes() == face.tobytes()  # no JPEG, no noise, delta kernel
    # q=100 is still lossy: OpenCV's encoder subsamples chroma 4:2:0 (as GFPGAN gets), so measure on an
    # image whose texture is in luminance, like a face, not on independent per-channel noise.
    rng = np.random.default_rng(1)
    smooth = cv2.GaussianBlur(face.astype(np.float64), (0, 0), 1.5) + rng.normal(0, 12, (96, 96, 1))
    smooth = np.clip(smooth, 0, 255).astype(np.uint8)
    out = degrade(smooth, clean(jpeg_quality=100))
    assert out.shape == smooth.shape
    assert 10 * math.log10(255**2 / err(out, smooth)) > 40.0


@pytest.mark.parametrize("scale", [0.8, 2.0, 3.3, 8.0])
def test_output_size(face, scale):
    assert degrade(face, clean(scale=scale)).shape == face.shape
    small = degrade(face, clean(scale=scale, resize_back=False))
    assert small.shape == (round(96 / scale), round(96 / scale), 3)


def test_down_up_loses_detail(face):
    down_up, same = degrade(face, clean(scale=4.0)), degrade(face, clean(scale=1.0))
    assert high_freq_energy(down_up) < 0.5 * high_freq_energy(same)


def test_kernel_normalised_and_symmetric():
    iso = gaussian_kernel(41, 3.0)
    assert iso.shape == (41, 41) and iso.dtype == np.float64
    assert iso.sum() == pytest.approx(1.0, abs=1e-12)
    assert np.allclose(iso, iso.T) and np.allclose(iso, iso[::-1, ::-1]) and np.allclose(iso, iso[:, ::-1])
    assert iso.argmax() == 41 * 20 + 20
    # matches OpenCV's separable Gaussian for an isotropic kernel
    g = cv2.getGaussianKernel(41, 3.0, cv2.CV_64F)
    assert np.allclose(iso, g @ g.T, atol=1e-12)
    delta = gaussian_kernel(41, 1e-3)
    assert delta[20, 20] == pytest.approx(1.0)


def test_aniso_kernel_orientation():
    horizontal = gaussian_kernel(21, 4.0, 1.0, 0.0)
    assert horizontal.sum() == pytest.approx(1.0)
    assert horizontal[10, 16] > horizontal[16, 10]  # wide along x (columns)
    vertical = gaussian_kernel(21, 4.0, 1.0, math.pi / 2)
    assert np.allclose(vertical, horizontal.T, atol=1e-12)
    diag = gaussian_kernel(21, 4.0, 1.0, math.pi / 4)
    assert diag[14, 14] > diag[6, 14]  # along the main diagonal (down-right in image coordinates)
    assert np.allclose(diag, diag[::-1, ::-1])  # centrally symmetric: correlation == convolution


def test_params_dict_round_trip():
    params = DegradationSpec().sample(np.random.default_rng(5))
    record = json.loads(json.dumps(params.to_dict()))
    assert DegradationParams.from_dict(record) == params
    assert isinstance(record["jpeg_quality"], int) and isinstance(record["sigma_x"], float)
    with pytest.raises(ValueError, match="bogus"):
        DegradationParams.from_dict({**record, "bogus": 1})
    spec = DegradationSpec(scale_range=(4, 4), jpeg_range=None)
    assert DegradationSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


def test_no_jpeg_spec():
    params = DegradationSpec(jpeg_range=None).sample(np.random.default_rng(0))
    assert params.jpeg_quality is None


@pytest.mark.parametrize(
    "field_name, overrides",
    [
        ("sigma_x", dict(sigma_x=-1.0, sigma_y=-1.0)),
        ("sigma_y", dict(kernel="aniso", sigma_y=0.0)),
        ("scale", dict(scale=0.0)),
        ("scale", dict(scale=-2.0)),
        ("noise_sigma", dict(noise_sigma=-0.5)),
        ("jpeg_quality", dict(jpeg_quality=0)),
        ("jpeg_quality", dict(jpeg_quality=101)),
        ("jpeg_quality", dict(jpeg_quality=75.5)),
        ("kernel_size", dict(kernel_size=40)),
        ("kernel", dict(kernel="box")),
        ("interpolation", dict(interpolation="lanczos9")),
        ("sigma_x", dict(sigma_x=float("nan"))),
        ("gray_noise", dict(gray_noise="false")),
        ("resize_back", dict(resize_back=1)),
    ],
)
def test_bad_params_name_the_field(field_name, overrides):
    with pytest.raises(ValueError, match=field_name):
        clean(**overrides)


@pytest.mark.parametrize(
    "field_name, kwargs",
    [
        ("sigma_range", dict(sigma_range=(-1, 2))),
        ("sigma_range", dict(sigma_range=(3, 2))),
        ("scale_range", dict(scale_range=(0, 4))),
        ("noise_range", dict(noise_range=(-5, 5))),
        ("jpeg_range", dict(jpeg_range=(0, 100))),
        ("jpeg_range", dict(jpeg_range=(60, 101))),
        ("gray_noise_prob", dict(gray_noise_prob=1.5)),
        ("interpolations", dict(interpolations=("bilinear", "magic"))),
        ("kernel_size", dict(kernel_size=0)),
        ("resize_back", dict(resize_back="no")),
    ],
)
def test_bad_spec_names_the_field(field_name, kwargs):
    with pytest.raises(ValueError, match=field_name):
        DegradationSpec(**kwargs)


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((16, 16, 3), np.float32),
        np.zeros((16, 16), np.uint8),
        np.zeros((16, 16, 4), np.uint8),
        np.zeros((0, 16, 3), np.uint8),
        [[0, 0, 0]],
    ],
)
def test_bad_image(image):
    with pytest.raises(ValueError, match="image"):
        degrade(image, clean())


def test_gaussian_kernel_bad_values():
    with pytest.raises(ValueError, match="sigma_x"):
        gaussian_kernel(41, -1.0)
    with pytest.raises(ValueError, match="kernel_size"):
        gaussian_kernel(8, 1.0)
