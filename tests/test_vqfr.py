"""VQFR v1 / v2 (nets/vqfr.py, registry entries vqfr_v1 and vqfr_v2): the released key layouts, outputs and codebook
choices equal to the reference code's on seeded weights (tests/fixtures/README.md), loading and its errors, and
how VQFR's demo feeds a face."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from contract import assert_fp32_close
from keyed_weights import keyed_random_state_dict, unit_norm_std

from lightning_dr2.exports import load_restorer
from lightning_dr2.image_io import images_to_tensor, to_uint8
from lightning_dr2.nets.loading import WeightsError, load_into
from lightning_dr2.nets.restorers import RESTORERS, build_restorer
from lightning_dr2.nets.vqfr import V1_CONFIG, V2_CONFIG, VQFRv1, VQFRv2
from lightning_dr2.weights import MissingWeightsError

FIXTURES = Path(__file__).parent / "fixtures"
NETS = {1: VQFRv1, 2: VQFRv2}
STD_RULES = {"unit_norm_std": unit_norm_std}

pytestmark = pytest.mark.usefixtures("one_thread")


def _fixture(version: int, kind: str = "tiny") -> dict:
    return torch.load(FIXTURES / f"vqfr_v{version}_{kind}.pt", weights_only=True)


def _seeded(version: int, fixture: dict) -> VQFRv1 | VQFRv2:
    """Our network with the fixture's seeded weights (values addressed by key, as the reference was filled)."""
    net = NETS[version](**fixture["config"]).eval()
    rule = STD_RULES[fixture["std_rule"]]
    load_into(net, keyed_random_state_dict(net.state_dict(), fixture["seed"], rule), "seeded weights")
    return net


@pytest.mark.parametrize("version", [1, 2])
def test_released_configuration_has_the_released_keys(version):
    manifest = json.loads((FIXTURES / f"vqfr_v{version}_keys.json").read_text())
    with torch.device("meta"):  # ~80 M parameters: shapes only
        net = NETS[version]()
    shapes = {k: list(v.shape) for k, v in net.state_dict().items()}
    assert shapes == manifest["state_dict"]
    assert sum(p.numel() for p in net.parameters()) == manifest["num_params"]
    released = asdict(V1_CONFIG if version == 1 else V2_CONFIG)
    assert {**released, "channel_multipliers": list(released["channel_multipliers"])} == manifest["config"]
    assert net.config == released and net.size == 512


@pytest.mark.parametrize("version", [1, 2])
def test_reproduces_the_reference_codes_and_outputs(version):
    fixture = _fixture(version)
    net = _seeded(version, fixture)
    with torch.no_grad():
        codes = net.code_indices(fixture["x"])
        assert torch.equal(codes, fixture["codes"]), "codebook choice differs from the reference"
        assert fixture["codes"].unique().numel() > 8  # the fixture exercises many codes, not one
        for case in fixture["cases"]:
            if version == 2:
                net.fidelity_ratio = case["fidelity_ratio"]
            assert_fp32_close(net(fixture["x"]), case["out"], f"v{version} {case}")
    if version == 2:  # the fidelity ratio matters: the cases differ by far more than the tolerance
        ratios = {case["fidelity_ratio"] for case in fixture["cases"]}
        assert {0.0, 1.0} <= ratios
        assert (fixture["cases"][0]["out"] - fixture["cases"][-1]["out"]).abs().max() > 0.1


def test_one_image_alone_equals_it_in_a_batch():
    fixture = _fixture(1)
    net = _seeded(1, fixture)
    with torch.no_grad():
        assert_fp32_close(net(fixture["x"][1:]), net(fixture["x"])[1:], "batch of one vs batch of two")


@pytest.mark.gpu
@pytest.mark.parametrize("version", [1, 2])
def test_released_configuration_on_gpu_reproduces_the_reference(version):
    """The full 512 model on CUDA (fp32, no TF32) against the reference's float64 output (centre crop + channel
    statistics), recorded on CPU."""
    fixture = _fixture(version, "512")
    x = torch.rand(1, 3, 512, 512, generator=torch.Generator().manual_seed(fixture["input_seed"])) * 2 - 1
    net = _seeded(version, fixture).cuda()
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        with torch.no_grad():
            assert torch.equal(net.code_indices(x.cuda()).cpu(), fixture["codes"])
            for case in fixture["cases"]:
                if version == 2:
                    net.fidelity_ratio = case["fidelity_ratio"]
                out = net(x.cuda()).cpu()
                assert_fp32_close(out[..., 240:272, 240:272], case["crop"], f"v{version} {case.get('fidelity_ratio')}")
                assert_fp32_close(out.mean(dim=(0, 2, 3)), case["mean"])
                assert_fp32_close(out.std(dim=(0, 2, 3)), case["std"])
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32


@pytest.mark.parametrize(("name", "wrapper"), [("vqfr_v1", "params"), ("vqfr_v2", "params_ema")])
def test_released_layout_loads_through_load_restorer(tmp_path, name, wrapper):
    """A file in the release's BasicSR layout (state dict under `params` / `params_ema`) loads strictly."""
    version = int(name[-1])
    fixture = _fixture(version)
    state = _seeded(version, fixture).state_dict()
    path = tmp_path / RESTORERS[name].weights
    torch.save({wrapper: state}, path)
    net = load_restorer(name, str(path), options=fixture["config"]).module
    with torch.no_grad():
        if version == 2:
            net.fidelity_ratio = fixture["cases"][0]["fidelity_ratio"]
        assert_fp32_close(net(fixture["x"]), fixture["cases"][0]["out"])
    assert not net.training


def test_missing_and_extra_keys_are_named():
    fixture = _fixture(2)
    net = NETS[2](**fixture["config"])
    state = dict(net.state_dict())
    state.pop("main_branch.align_func_dict.Level_1.dcn.conv_offset.weight")
    state["quantizer.usage"] = torch.zeros(64, dtype=torch.int32)
    with pytest.raises(WeightsError) as err:
        load_into(net, state, "VQFR_v2.pth")
    message = str(err.value)
    assert "VQFR_v2.pth" in message
    assert "main_branch.align_func_dict.Level_1.dcn.conv_offset.weight" in message
    assert "quantizer.usage" in message


@pytest.mark.parametrize(
    ("name", "file", "how"),
    [
        ("vqfr_v1", "VQFR_v1-33a1fac5.pth", "drive.google.com/drive/folders/1lczKYEbARwe27FJlKoFdng7UnffGDjO2"),
        ("vqfr_v2", "VQFR_v2.pth", "weights --fetch VQFR_v2.pth"),
    ],
)
def test_missing_weights_name_the_file_and_how_to_get_it(tmp_path, name, file, how):
    with pytest.raises(MissingWeightsError) as err:
        load_restorer(name, None, weights_dir=str(tmp_path))
    assert file in str(err.value) and how in str(err.value) and str(tmp_path) in str(err.value)


def test_entries_feed_faces_like_the_vqfr_demo():
    """demo.py --aligned: cv2.resize(img, (512, 512)) (INTER_LINEAR), BGR -> RGB, /255, normalize(0.5, 0.5);
    saved with tensor2img(min_max=(-1, 1)); v2's -f default 0 (v1 takes no ratio)."""
    for name in ("vqfr_v1", "vqfr_v2"):
        spec = RESTORERS[name]
        assert (spec.size, spec.resize) == (512, "cv2_linear")
        assert "[-1, 1]" in spec.feed and "512x512" in spec.feed
        assert "Apache-2.0" in spec.licence and spec.extra is None
    assert RESTORERS["vqfr_v1"].defaults == {} and RESTORERS["vqfr_v2"].defaults == {"fidelity_ratio": 0.0}

    rgb = np.random.default_rng(0).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    resized = cv2.resize(bgr, (512, 512))
    assert np.array_equal(resized, bgr)  # an aligned 512 face goes in unresized
    script = (torch.from_numpy(resized[..., ::-1].copy()).permute(2, 0, 1).float() / 255.0 - 0.5) / 0.5
    ours = images_to_tensor([rgb])[0]
    assert_fp32_close(ours, script)
    assert float(ours.min()) >= -1.0 and float(ours.max()) <= 1.0

    out = torch.randn(1, 3, 8, 8) * 1.5  # the networks' output is not squashed
    saved = np.round((np.clip(out[0].numpy(), -1, 1) + 1) / 2 * 255.0).astype(np.uint8)  # tensor2img
    assert np.array_equal(to_uint8(out)[0].numpy(), saved)


def test_options_defaults_and_bad_inputs():
    tiny = _fixture(2)["config"]
    assert build_restorer("vqfr_v2", tiny).fidelity_ratio == 0.0
    assert build_restorer("vqfr_v2", {**tiny, "fidelity_ratio": 0.3}).fidelity_ratio == 0.3
    with pytest.raises(ValueError, match="fidelity_ratio must be in"):
        build_restorer("vqfr_v2", {**tiny, "fidelity_ratio": 1.5})
    with pytest.raises(ValueError, match="fidelity_ratio"):
        build_restorer("vqfr_v1", {"fidelity_ratio": 0.5})  # v1 has no fidelity control
    with pytest.raises(ValueError, match="multiple of 32"):
        VQFRv2(size=48, base_channels=32)
    with pytest.raises(ValueError, match="multiple of 32 .GroupNorm"):
        VQFRv1(base_channels=48)
    with pytest.raises(ValueError, match="unknown_option"):
        build_restorer("vqfr_v1", {"unknown_option": 1})
    net = load_restorer("vqfr_v1", "random", options=_fixture(1)["config"]).module
    assert net.size == 32
    with pytest.raises(ValueError, match=r"\(B, 3, 32, 32\)"):
        net(torch.zeros(1, 3, 64, 64))
    with torch.no_grad():
        out = net(torch.zeros(2, 3, 32, 32))
    assert out.shape == (2, 3, 32, 32) and bool(torch.isfinite(out).all())
