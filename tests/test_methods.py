"""Methods (issue 18): registry networks alone as baselines (`restore method=<network>`), DR2+X through restore,
and the config rules for method names. Tiny random networks (GFP-GAN 64 px, VQFR v2 32 px), CPU, seconds."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import save_eval_unet, tiny_restore_cfg
from contract import assert_uint8_close
from PIL import Image

from lightning_dr2.config.loader import ConfigError
from lightning_dr2.config.methods import parse_method
from lightning_dr2.datasets.synthetic import render_face
from lightning_dr2.diffusion.noise import image_seed
from lightning_dr2.dr2.pipeline import DR2E
from lightning_dr2.exports.restorer import load_restorer
from lightning_dr2.image_io import image_to_tensor, read_image, to_uint8_images
from lightning_dr2.jobs.restore import run_restore

pytestmark = pytest.mark.usefixtures("one_thread")

GFPGAN_TINY = {"out_size": 64, "num_style_feat": 32, "channel_multiplier": 2, "narrow": 0.0625}
VQFR_TINY = {
    "size": 32,
    "base_channels": 32,
    "channel_multipliers": [1, 1, 2, 2],
    "encoder_blocks": 2,
    "decoder_blocks": 2,
    "cond_channels": 8,
    "deformable_groups": 4,
    "num_codes": 64,
    "code_dim": 16,
}
TINY = {"gfpgan_v1.4": GFPGAN_TINY, "vqfr_v2": VQFR_TINY}


def options_yaml(options: dict) -> str:
    return json.dumps(options).replace('"', "")


@pytest.fixture(scope="module")
def nets(tmp_path_factory) -> dict[str, Path]:
    """Seeded random tiny networks saved as files (a file fixes the weights; `random` draws new ones each load),
    and the tiny UNet."""
    root = tmp_path_factory.mktemp("nets")
    files = {"unet": save_eval_unet(root / "unet")}
    for i, (name, options) in enumerate(TINY.items()):
        torch.manual_seed(10 + i)
        net = load_restorer(name, "random", options).module
        with torch.no_grad():
            for p in net.parameters():
                p.add_(0.02 * torch.randn_like(p))  # zero-initialised layers would hide the network
        files[name] = root / f"{name}.pth"
        torch.save(net.state_dict(), files[name])
    return files


def restorers_override(nets: dict[str, Path]) -> str:
    entries = ", ".join(f"{{name: {n}, weights: {nets[n]}, options: {options_yaml(o)}}}" for n, o in TINY.items())
    return f"restorers=[{entries}]"


@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> Path:
    """Three 48 px faces (not the networks' size: the feed's resize is exercised)."""
    root = tmp_path_factory.mktemp("faces")
    for i in range(3):
        Image.fromarray(render_face(500 + i, 48)).save(root / f"f{i}.png")
    return root


def script_feed(path: Path, size: int) -> torch.Tensor:
    """GFPGANer.enhance(has_aligned=True) transcribed: cv2.imread (BGR) -> cv2.resize(512) -> img2tensor(/255,
    bgr2rgb) -> normalize(0.5, 0.5), at the tiny network's size."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    bgr = cv2.resize(bgr, (size, size))  # INTER_LINEAR is cv2's default, as in the script
    rgb = bgr[:, :, ::-1].astype(np.float32) / 255.0
    x = torch.from_numpy(rgb.copy()).permute(2, 0, 1)
    return ((x - 0.5) / 0.5)[None]


def test_baseline_input_preparation_is_the_scripts(faces: Path) -> None:
    from lightning_dr2.datasets.predict_inputs import RestorerInputs

    data = RestorerInputs(faces, ["f0.png", "f1.png"], 64, 0, "center_crop", "cv2_linear")
    for i, rel in enumerate(data.rels):
        lq = data[i]["lq"]
        assert lq.shape == (3, 64, 64) and lq.min() >= -1 and lq.max() <= 1
        torch.testing.assert_close(lq[None], script_feed(faces / rel, 64), atol=1e-6, rtol=0)


def test_restore_method_runs_the_network_alone_as_its_script(faces: Path, nets: dict, tmp_path: Path) -> None:
    cfg = tiny_restore_cfg(nets["unet"], faces, tmp_path / "out", "method=gfpgan_v1.4", restorers_override(nets))
    summary = run_restore(cfg)
    assert summary.restored == 3
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    settings = manifest["settings"]
    assert settings["network"] == "gfpgan_v1.4" and settings["feed"] == "cv2_linear" and settings["size"] == 64
    assert settings["network_sha256"] == json.loads(json.dumps(settings))["network_sha256"] != "random"
    assert settings["network_options"] == GFPGAN_TINY
    assert not (tmp_path / "out" / "dr2").exists()  # no DR2 stage ran
    net = load_restorer("gfpgan_v1.4", str(nets["gfpgan_v1.4"]), GFPGAN_TINY).module
    for rel in ("f0.png", "f2.png"):
        out = read_image(tmp_path / "out" / "restored" / rel)
        assert out.shape == (64, 64, 3)
        with torch.no_grad():
            expected = net(script_feed(faces / rel, 64), seeds=[image_seed(0, rel)]).clamp(-1, 1)
        assert_uint8_close(out, to_uint8_images(expected)[0])
    again = run_restore(cfg)  # resumable: same input, network and options -> reused
    assert again.restored == 0 and again.skipped == 3


@pytest.mark.parametrize("how", ["enhancer", "method"])
def test_dr2_plus_x_through_restore_equals_dr2e(faces: Path, nets: dict, tmp_path: Path, how: str) -> None:
    if how == "enhancer":
        extra = [
            "enhancer.name=gfpgan_v1.4",
            f"enhancer.weights={nets['gfpgan_v1.4']}",
            f"enhancer.options={options_yaml(GFPGAN_TINY)}",
        ]
    else:
        extra = ["method=DR2+gfpgan_v1.4", restorers_override(nets)]
    run_restore(tiny_restore_cfg(nets["unet"], faces, tmp_path / "out", *extra))
    pipe = DR2E.from_weights(
        nets["unet"],
        enhancer="gfpgan_v1.4",
        enhancer_weights=str(nets["gfpgan_v1.4"]),
        enhancer_options=GFPGAN_TINY,
        N=4,
        tau=6,
        omega=8,
    )
    assert pipe.enhancer_draws_noise
    rels = ["f0.png", "f1.png", "f2.png"]
    images = [read_image(faces / r) for r in rels]
    expected = pipe.restore(images, seeds=[image_seed(0, r) for r in rels])
    for rel, exp in zip(rels, expected, strict=True):
        assert_uint8_close(read_image(tmp_path / "out" / "restored" / rel), exp)


def test_dr2e_enhancer_noise_does_not_depend_on_the_batch(nets: dict) -> None:
    pipe = DR2E.from_weights(
        nets["unet"], enhancer="gfpgan_v1.4", enhancer_weights=str(nets["gfpgan_v1.4"]), enhancer_options=GFPGAN_TINY
    )
    dr2 = image_to_tensor(render_face(1, 32))[None].repeat(3, 1, 1, 1)
    together = pipe.enhance(dr2, seeds=[5, 6, 7])
    alone = pipe.enhance(dr2[1:2], seeds=[6])
    torch.testing.assert_close(together[1:2], alone, atol=1e-5, rtol=0)
    assert (together[0] - together[1]).abs().max() > 1e-4  # other seeds: other noise


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("DR2+none", "DR2 alone is the method 'DR2'"),
        ("DR2+nope", "unknown network 'nope'"),
        ("gfpgan", "unknown method 'gfpgan'.*registered networks.*gfpgan_v1.4"),
    ],
)
def test_bad_method_names_are_errors_listing_the_registry(name: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_method(name)


def test_restore_method_checked_at_load_time(faces: Path, nets: dict, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="method=.*unknown method 'GFPGAN'"):
        tiny_restore_cfg(nets["unet"], faces, tmp_path, "method=GFPGAN")
    with pytest.raises(ConfigError, match=r"restorers\[0\].name"):
        tiny_restore_cfg(nets["unet"], faces, tmp_path, "restorers=[{name: nope}]")
