"""GFP-GAN v1.3/v1.4, RestoreFormer and CodeFormer through spandrel (nets/spandrel_nets.py, spandrel_codeformer.py).

Each entry builds with exactly the released key layout (manifests recorded from the original code), reproduces
the original code's output on keyed random weights (tests/fixtures/README.md), loads a released-layout file
through `load_restorer`, and names what is wrong: a missing or extra key, a missing file, a missing extra.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from contract import assert_fp32_close
from keyed_weights import keyed_random_state_dict

from lightning_dr2.exports import load_restorer
from lightning_dr2.image_io import images_to_tensor
from lightning_dr2.nets.loading import WeightsError, load_into
from lightning_dr2.nets.restorers import RESTORERS, MissingExtraError, build_restorer
from lightning_dr2.weights.lookup import MissingWeightsError
from lightning_dr2.weights.registry import WEIGHTS

HERE = Path(__file__).parent / "fixtures"
ENTRIES = ["gfpgan_v1.3", "gfpgan_v1.4", "restoreformer", "codeformer"]
MANIFESTS = {
    "gfpgan_v1.3": ("gfpgan_keys.json", 285),
    "gfpgan_v1.4": ("gfpgan_keys.json", 285),
    "restoreformer": ("restoreformer_keys.json", 405),
    "codeformer": ("codeformer_keys.json", 515),
}


def seeded_input(seed: int, shape) -> torch.Tensor:
    """The fixtures' inputs: uniform in [-1, 1] from their own seeded generator (not stored in the files)."""
    return torch.rand(tuple(shape), generator=torch.Generator().manual_seed(seed)) * 2 - 1


def load_recorded(name: str) -> dict:
    return torch.load(HERE / name, weights_only=True)


def keyed_net(fixture: dict) -> torch.nn.Module:
    """Our entry in the fixture's configuration, filled with the fixture's keyed random weights."""
    net = build_restorer(fixture["entry"], fixture["options"])
    load_into(net, keyed_random_state_dict(net.state_dict(), fixture["weights_seed"]), "keyed random weights")
    return net.eval()


# ------------------------------------------------------------------------------------------- registry facts


@pytest.mark.parametrize("name", ENTRIES)
def test_entry_names_its_released_file_and_how_the_script_feeds_it(name):
    spec = RESTORERS[name]
    entry = WEIGHTS[spec.weights]
    assert entry.role == "restoration network" and entry.urls[0].startswith("https://github.com/")
    assert spec.size == 512 and spec.resize == "cv2_linear" and spec.licence
    # the scripts' aligned-face preparation (--aligned / --has_aligned)
    for fact in ("cv2.resize to 512x512 (INTER_LINEAR)", "/255", "BGR->RGB", "RGB in [-1, 1]"):
        assert fact in spec.feed, (name, fact)
    assert spec.draws_noise == name.startswith("gfpgan")
    assert spec.extra == ("codeformer" if name == "codeformer" else None)


def test_codeformer_defaults_and_licence_are_the_scripts():
    spec = RESTORERS["codeformer"]
    assert dict(spec.defaults) == {"w": 0.5}  # inference_codeformer.py --fidelity_weight default
    assert "w=0.5, adain=True" in spec.feed
    assert "S-Lab License 1.0" in spec.licence and "non-commercial" in spec.licence


def test_script_preparation_equals_our_rgb_tensor():
    """GFPGANer/CodeFormer: cv2.resize(BGR, (512, 512)) -> /255 -> BGR->RGB -> (x - 0.5) / 0.5. Our images are
    RGB uint8 -> images_to_tensor: the same values once the same resize is applied (range and colour order)."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (300, 280, 3), dtype=np.uint8)
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    face = cv2.resize(bgr, (512, 512)) / 255.0  # default interpolation: INTER_LINEAR
    script = (torch.from_numpy(face[..., ::-1].copy()).permute(2, 0, 1).float() - 0.5) / 0.5
    ours = images_to_tensor([cv2.resize(rgb, (512, 512), interpolation=cv2.INTER_LINEAR)])[0]
    assert script.shape == (3, 512, 512) and script.min() >= -1 and script.max() <= 1
    assert_fp32_close(ours, script)


# ------------------------------------------------------------------------------------------- key layout


@pytest.mark.parametrize("name", ENTRIES)
def test_released_key_manifest_loads_strictly(name):
    """The manifest was recorded from the original code's released configuration (GFPGANer / CodeFormer script)."""
    if name == "codeformer":
        pytest.importorskip("spandrel_extra_arches")
    file, count = MANIFESTS[name]
    manifest = json.loads((HERE / file).read_text())
    assert len(manifest) == count
    with torch.device("meta"):  # shapes only: no 100 M random numbers
        net = build_restorer(name)
    assert {k: list(v.shape) for k, v in net.state_dict().items()} == manifest
    load_into(net, {k: torch.empty(shape, device="meta") for k, shape in manifest.items()}, file)


def test_missing_and_extra_keys_are_named(tmp_path):
    fixture = load_recorded("gfpgan_tiny.pt")
    state = build_restorer("gfpgan_v1.4", fixture["options"]).state_dict()
    state.pop("stylegan_decoder.to_rgbs.0.bias")
    state["stylegan_decoder.extra_layer.weight"] = torch.zeros(1)
    path = tmp_path / "GFPGANv1.4.pth"
    torch.save({"params_ema": state}, path)
    with pytest.raises(WeightsError) as err:
        load_restorer("gfpgan_v1.4", str(path), fixture["options"])
    message = str(err.value)
    assert str(path) in message
    assert "stylegan_decoder.to_rgbs.0.bias" in message and "stylegan_decoder.extra_layer.weight" in message


@pytest.mark.parametrize("name", ENTRIES)
def test_missing_released_file_names_it_and_where_to_get_it(name):
    spec = RESTORERS[name]
    with pytest.raises(MissingWeightsError) as err:
        load_restorer(name, None)
    message = str(err.value)
    assert spec.weights in message and WEIGHTS[spec.weights].urls[0] in message


def test_released_layout_loads_params_ema_as_the_scripts_do(tmp_path):
    """GFPGANer takes `params_ema` when present, else `params`; inference_codeformer.py takes `params_ema`."""
    fixture = load_recorded("restoreformer_tiny.pt")
    net = keyed_net(fixture)
    decoy = keyed_random_state_dict(net.state_dict(), fixture["weights_seed"] + 1)
    path = tmp_path / "RestoreFormer.pth"
    torch.save({"params": decoy, "params_ema": net.state_dict()}, path)
    loaded = load_restorer("restoreformer", str(path), fixture["options"]).module
    x = seeded_input(fixture["input_seed"], fixture["input_shape"])
    with torch.no_grad():
        assert_fp32_close(loaded(x), net(x))


# ------------------------------------------------------------------------------------------- reference fixtures


def test_gfpgan_reproduces_the_original_code():
    """Tiny GFPGANv1Clean; the original ran each image alone under torch.manual_seed(noise seed), we the batch."""
    fixture = load_recorded("gfpgan_tiny.pt")
    net = keyed_net(fixture)
    x = seeded_input(fixture["input_seed"], fixture["input_shape"])
    with torch.no_grad():
        out = net(x, seeds=fixture["noise_seeds"])
    assert_fp32_close(out, fixture["output"], "GFPGAN vs TencentARC/GFPGAN")
    assert fixture["output"].std() > 0.05  # the fixture is not a degenerate constant


def test_gfpgan_noise_is_per_image_and_drawn_as_the_script_draws_it():
    fixture = load_recorded("gfpgan_tiny.pt")
    net = keyed_net(fixture)
    x = seeded_input(fixture["input_seed"], fixture["input_shape"])
    with torch.no_grad():
        pair = net(x, seeds=[7, 8])
        alone = net(x[1:], seeds=[8])
        torch.manual_seed(8)  # seeds=None: the script's draw from the global generator
        script = net(x[1:])
        other = net(x[1:], seeds=[9])
    assert_fp32_close(pair[1:], alone)
    assert_fp32_close(script, alone)
    assert (other - alone).abs().max() > 1e-3  # the noise matters, so the seed does
    with pytest.raises(ValueError, match="2 seeds for a batch of 1"):
        net(x[:1], seeds=[1, 2])


def test_restoreformer_reproduces_the_original_code():
    fixture = load_recorded("restoreformer_tiny.pt")
    net = keyed_net(fixture)
    x = seeded_input(fixture["input_seed"], fixture["input_shape"])
    with torch.no_grad():
        assert_fp32_close(net(x), fixture["output"], "RestoreFormer vs GFPGAN's restoreformer_arch")
    assert fixture["code_margin"] > 1e-3  # nearest-code choice far from a tie: stable across CPU kernels


@pytest.mark.slow
def test_codeformer_reproduces_the_original_code():
    """CodeFormer only exists at 512 px (the 16x16 code grid is fixed): a central crop and per-channel stats."""
    pytest.importorskip("spandrel_extra_arches")
    fixture = load_recorded("codeformer_512.pt")
    net = keyed_net(fixture)
    assert net.w == 0.5
    x = seeded_input(fixture["input_seed"], fixture["input_shape"])
    with torch.no_grad():
        out = net(x)
    lo, hi = fixture["crop"]
    assert_fp32_close(out[..., lo:hi, lo:hi], fixture["output_crop"], "CodeFormer vs sczhou/CodeFormer")
    assert_fp32_close(out.mean(dim=(0, 2, 3)), fixture["output_mean"])
    assert_fp32_close(out.std(dim=(0, 2, 3)), fixture["output_std"])
    assert fixture["code_margin"] > 5e-4  # top-2 code logits (std 0.14) apart: no near tie


# ------------------------------------------------------------------------------------------- building and running


@pytest.mark.parametrize("fixture_name", ["gfpgan_tiny.pt", "restoreformer_tiny.pt"])
def test_load_restorer_random_runs_at_tiny_size(fixture_name):
    fixture = load_recorded(fixture_name)
    net = load_restorer(fixture["entry"], "random", fixture["options"]).module
    x = seeded_input(0, fixture["input_shape"])
    with torch.no_grad():
        out = net(x)
    assert out.shape == x.shape and torch.isfinite(out).all()
    with pytest.raises(ValueError, match=r"expects images of shape \(B, 3, \d+, \d+\)"):
        net(x[..., :16, :16])


def test_codeformer_random_and_its_fidelity_weight():
    pytest.importorskip("spandrel_extra_arches")
    net = load_restorer("codeformer", "random", {"w": 0.7}).module
    assert net.w == 0.7 and net.size == 512 and not net.training
    with torch.device("meta"), pytest.raises(ValueError, match="w must be in"):
        build_restorer("codeformer", {"w": 1.5})


def test_codeformer_without_the_extra_names_it_and_its_licence(monkeypatch):
    monkeypatch.setitem(sys.modules, "spandrel_extra_arches", None)  # what a missing package looks like
    monkeypatch.delitem(sys.modules, "lightning_dr2.nets.spandrel_codeformer", raising=False)
    with pytest.raises(MissingExtraError) as err:
        load_restorer("codeformer", "random")
    message = str(err.value)
    assert "pip install 'lightning_dr2[codeformer]'" in message
    assert "S-Lab License 1.0" in message and "non-commercial" in message
