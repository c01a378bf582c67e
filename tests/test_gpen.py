"""GPEN-BFR-512 (`gpen_512`): the released key layout, outputs equal to GPEN's own FullGenerator on seeded
random weights (tests/fixtures/gpen_*, see tests/fixtures/README.md), the plain-torch resampling and activation
ops against independent formulations, the registry entry and how GPEN's script feeds it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from contract import assert_fp32_close
from gpen_rules import TINY_CASES, gpen_std, input_images
from keyed_weights import keyed_random_state_dict
from scipy.signal import convolve2d

from lightning_dr2.exports import load_restorer
from lightning_dr2.nets.gpen import BFR_512, GPEN, blur_kernel, scaled_leaky_relu, upfirdn2d
from lightning_dr2.nets.loading import WeightsError, load_into
from lightning_dr2.nets.restorers import RESTORERS
from lightning_dr2.weights.lookup import MissingWeightsError
from lightning_dr2.weights.registry import WEIGHTS

FIXTURES = Path(__file__).parent / "fixtures"
RELEASED_PARAMS = 71_005_223  # parameters of GPEN-BFR-512 (plus 14 fixed 4x4 blur-filter buffers)
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_fixture() -> dict:
    return torch.load(FIXTURES / "gpen_tiny.pt", weights_only=True)


def seeded_gpen(config: dict, seed: int) -> GPEN:
    """GPEN with `config`, filled by the fixtures' keyed weights rule (eval mode)."""
    net = GPEN(**config)
    load_into(net, keyed_random_state_dict(net.state_dict(), seed, gpen_std), f"keyed weights (seed {seed})")
    return net.eval()


def released_manifest() -> dict[str, list[int]]:
    return json.loads((FIXTURES / "gpen_512_keys.json").read_text())


# ------------------------------------------------------------------------------------------ reference outputs
@pytest.mark.parametrize("case", list(TINY_CASES))
def test_reproduces_reference_fixture(tiny_fixture, case):
    recorded = tiny_fixture["cases"][case]
    config, seed, input_seed, batch = TINY_CASES[case]
    assert recorded["config"] == config and recorded["seed"] == seed and recorded["input_seed"] == input_seed
    x = input_images(batch, config["size"], input_seed)
    with torch.no_grad():
        out = seeded_gpen(config, seed)(x)
    assert out.shape == recorded["out"].shape == x.shape
    assert_fp32_close(out, recorded["out"], f"GPEN {case} vs reference FullGenerator")


@pytest.mark.slow
def test_reproduces_reference_at_512():
    """The released configuration itself (71 M parameters, ~30 s on CPU): a central crop and per-channel
    statistics of the reference FullGenerator's output on the same keyed weights."""
    recorded = torch.load(FIXTURES / "gpen_512_crop.pt", weights_only=True)
    assert recorded["config"] == BFR_512
    with torch.device("meta"):
        net = GPEN()
    net.load_state_dict(keyed_random_state_dict(net.state_dict(), recorded["seed"], gpen_std), assign=True)
    with torch.no_grad():
        out = net.eval()(input_images(1, 512, recorded["input_seed"]))
    lo, hi = recorded["crop"]
    assert_fp32_close(out[:, :, lo:hi, lo:hi], recorded["out_crop"], "GPEN-512 central crop")
    assert_fp32_close(out.mean(dim=(0, 2, 3)), recorded["out_mean"], "GPEN-512 channel means")
    assert_fp32_close(out.std(dim=(0, 2, 3)), recorded["out_std"], "GPEN-512 channel stds")


def test_batch_items_are_independent_and_draw_no_noise():
    """GPEN feeds encoder features where StyleGAN2 draws noise: no random numbers, no batch coupling."""
    config, seed, input_seed, _ = TINY_CASES["concat"]
    net = seeded_gpen(config, seed)
    x = input_images(3, config["size"], input_seed)
    rng = torch.get_rng_state()
    with torch.no_grad():
        together = net(x)
        alone = net(x[1:2])
    assert torch.equal(torch.get_rng_state(), rng), "GPEN's forward consumed the global RNG"
    assert_fp32_close(together[1:2], alone, "item 1 in a batch of 3 vs alone")


# --------------------------------------------------------------------------------------- released key layout
def test_released_key_manifest_loads_strictly():
    manifest = released_manifest()
    with torch.device("meta"):  # 71 M parameters: shapes only
        net = GPEN(**BFR_512)
    assert {k: list(v.shape) for k, v in net.state_dict().items()} == manifest
    assert len(manifest) == 163
    assert sum(p.numel() for p in net.parameters()) == RELEASED_PARAMS
    load_into(net, {k: torch.empty(shape, device="meta") for k, shape in manifest.items()}, "GPEN-BFR-512 keys")


def test_defaults_are_the_released_configuration():
    with torch.device("meta"):
        assert GPEN().config == BFR_512
        assert RESTORERS["gpen_512"].build().config == BFR_512


def test_missing_and_unexpected_keys_are_named(tmp_path):
    config = TINY_CASES["concat"][0]
    net = GPEN(**config)
    state = dict(net.state_dict())
    state.pop("generator.to_rgbs.1.conv.modulation.bias")
    state["ecd9.0.1.weight"] = torch.zeros(1)
    with pytest.raises(WeightsError, match=r"generator\.to_rgbs\.1\.conv\.modulation\.bias") as err:
        load_into(GPEN(**config), state, tmp_path / "broken.pth")
    assert "ecd9.0.1.weight" in str(err.value) and "broken.pth" in str(err.value)


def test_a_file_of_another_gpen_configuration_names_the_shape_mismatch(tmp_path):
    config = TINY_CASES["concat"][0]
    path = tmp_path / "narrow.pth"
    torch.save(GPEN(**{**config, "narrow": 0.0625}).state_dict(), path)
    with pytest.raises(WeightsError, match="shape mismatches") as err:
        load_restorer("gpen_512", str(path), options=config)
    assert "narrow.pth" in str(err.value)


# ------------------------------------------------------------------------------------------ registry entry
def test_registry_entry_facts():
    spec = RESTORERS["gpen_512"]
    assert spec.size == 512 and spec.weights == "GPEN-BFR-512.pth" and spec.defaults == {}
    assert spec.resize == "cv2_linear"
    assert "non-commercial" in spec.licence
    entry = WEIGHTS["GPEN-BFR-512.pth"]
    assert entry.role == "restoration network" and "gpen_512" in entry.used_by
    assert entry.urls and "yangxy/GPEN" in entry.source


def test_script_feed_is_rgb_in_minus_one_one_at_512():
    """GPEN's FaceGAN.process for an aligned face, step by step: cv2.resize to 512 (default INTER_LINEAR) of the
    BGR uint8 image, /255, (x - 0.5) / 0.5, channels flipped: exactly RGB * 2 / 255 - 1, our contract."""
    rng = np.random.default_rng(0)
    bgr = rng.integers(0, 256, size=(300, 280, 3), dtype=np.uint8)
    resized = cv2.resize(bgr, (512, 512))
    scripted = ((torch.from_numpy(resized) / 255.0 - 0.5) / 0.5).permute(2, 0, 1).unsqueeze(0).flip(1)
    rgb = np.ascontiguousarray(cv2.resize(bgr, (512, 512), interpolation=cv2.INTER_LINEAR)[..., ::-1])
    ours = torch.from_numpy(rgb).permute(2, 0, 1).unsqueeze(0).float() / 127.5 - 1
    assert scripted.shape[-2:] == (RESTORERS["gpen_512"].size,) * 2
    assert_fp32_close(scripted, ours, "GPEN script input vs RGB [-1, 1]")
    assert -1 <= scripted.min() and scripted.max() <= 1


def test_load_restorer_random_and_from_a_file(tmp_path):
    config, seed, input_seed, batch = TINY_CASES["concat"]
    random_net = load_restorer("gpen_512", "random", options=config).module
    x = input_images(batch, config["size"], input_seed)
    with torch.no_grad():
        assert random_net(x).shape == x.shape
    path = tmp_path / "gpen_tiny.pth"
    torch.save({"params_ema": seeded_gpen(config, seed).state_dict()}, path)  # a wrapped layout loads too
    loaded = load_restorer("gpen_512", str(path), options=config).module
    with torch.no_grad():
        assert_fp32_close(loaded(x), seeded_gpen(config, seed)(x), "loaded through load_restorer")


def test_missing_released_file_names_it_and_how_to_fetch():
    with pytest.raises(MissingWeightsError, match=r"GPEN-BFR-512\.pth") as err:
        load_restorer("gpen_512")
    assert "weights --fetch" in str(err.value)


def test_bad_input_and_bad_config_are_named():
    net = GPEN(**TINY_CASES["add"][0])
    with pytest.raises(ValueError, match=r"\(B, 3, 64, 64\).*resize"):
        net(torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match="power of two"):
        GPEN(size=96)


# ------------------------------------------------------------------------ plain ops vs independent versions
def numpy_upfirdn(x: np.ndarray, kernel: np.ndarray, up: int, down: int, pad: tuple[int, int]) -> np.ndarray:
    """Textbook resampling of one 2-D signal: zero-stuff, pad (or crop), full 2-D convolution ('valid'),
    decimate; float64 and scipy, sharing nothing with the torch version."""
    h, w = x.shape
    stuffed = np.zeros((h * up, w * up))
    stuffed[::up, ::up] = x
    before, after = pad
    padded = np.pad(stuffed, ((max(before, 0), max(after, 0)),) * 2)
    padded = padded[
        max(-before, 0) : padded.shape[0] - max(-after, 0), max(-before, 0) : padded.shape[1] - max(-after, 0)
    ]
    return convolve2d(padded, kernel, mode="valid")[::down, ::down]


@pytest.mark.parametrize(
    "up, down, pad, kernel_shape",
    [
        (2, 1, (2, 1), (4, 4)),  # ToRGB's skip upsampling
        (1, 1, (1, 1), (4, 4)),  # the blur after a transposed conv
        (1, 2, (2, 2), (4, 4)),  # the encoder's downsampling blur (as a decimating filter)
        (2, 2, (-1, 2), (3, 3)),  # negative padding crops; odd kernel
        (3, 1, (0, 2), (2, 5)),  # non-square kernel
    ],
)
def test_upfirdn2d_matches_textbook_resampling(up, down, pad, kernel_shape):
    gen = torch.Generator().manual_seed(up * 10 + down)
    x = torch.randn(2, 3, 5, 7, generator=gen)
    kernel = torch.randn(kernel_shape, generator=gen)  # asymmetric: a missing flip would show
    out = upfirdn2d(x, kernel, up=up, down=down, pad=pad)
    expected = np.stack(
        [
            np.stack(
                [numpy_upfirdn(x[b, c].double().numpy(), kernel.double().numpy(), up, down, pad) for c in range(3)]
            )
            for b in range(2)
        ]
    )
    assert out.shape == expected.shape
    assert_fp32_close(out, torch.from_numpy(expected), f"upfirdn2d up={up} down={down} pad={pad}")


def test_blur_kernel_is_the_normalised_binomial():
    k = blur_kernel((1, 3, 3, 1), gain=4.0)
    expected = np.outer([1, 3, 3, 1], [1, 3, 3, 1]) / 64 * 4
    np.testing.assert_allclose(k.numpy(), expected, rtol=1e-7)


def test_scaled_leaky_relu_matches_its_definition():
    gen = torch.Generator().manual_seed(0)
    x, bias = torch.randn(2, 5, 3, 4, generator=gen), torch.randn(5, generator=gen)
    v = x.double().numpy() + bias.double().numpy()[None, :, None, None]
    expected = np.where(v >= 0, v, 0.2 * v) * math.sqrt(2)
    assert_fp32_close(scaled_leaky_relu(x, bias), torch.from_numpy(expected), "bias + leaky ReLU on (B, C, H, W)")
    flat = torch.randn(3, 5, generator=gen)  # the linear layers' (B, C) form
    v2 = flat.double().numpy() + bias.double().numpy()[None]
    assert_fp32_close(scaled_leaky_relu(flat, bias), torch.from_numpy(np.where(v2 >= 0, v2, 0.2 * v2) * math.sqrt(2)))


@pytest.mark.weights
def test_released_file_loads_strictly_when_present():
    """The real GPEN-BFR-512.pth (skipped where absent, as on CI): strict load through the registry, its
    filters are GPEN's [1,3,3,1] binomials, and a mid-gray image comes back finite at 512."""
    from lightning_dr2.weights import find_weight

    try:
        find_weight("GPEN-BFR-512.pth")
    except MissingWeightsError:
        pytest.skip("GPEN-BFR-512.pth not present (see `python -m lightning_dr2 weights`)")
    net = load_restorer("gpen_512").module
    kernels = {k: v for k, v in net.state_dict().items() if k.endswith(".kernel")}
    assert len(kernels) == 14
    for key, kernel in kernels.items():
        assert_fp32_close(kernel / kernel.sum(), blur_kernel((1, 3, 3, 1)), key)
    with torch.no_grad():
        out = net(torch.zeros(1, 3, 512, 512))
    assert out.shape == (1, 3, 512, 512) and torch.isfinite(out).all()
