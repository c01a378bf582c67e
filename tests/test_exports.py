"""The home of network files (`lightning_dr2.exports`): a load returns what it loaded (and reads each JSON once),
explicit diffusion settings win over a UNet sidecar only when they were GIVEN, and the enhancer size a manifest
records is the size that ran."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import pytest
import torch
from conftest import TINY_EVAL_UNET, seeded_random_
from PIL import Image

from lightning_dr2.config.pipeline import RestoreConfig
from lightning_dr2.config.recipes import load_config
from lightning_dr2.datasets.synthetic import render_face
from lightning_dr2.diffusion import PUBLISHED_DIFFUSION, DiffusionConfig, DiffusionRequest
from lightning_dr2.dr2.pipeline import DR2E
from lightning_dr2.exports import restorer as restorer_exports
from lightning_dr2.exports import unet as unet_exports
from lightning_dr2.exports.restorer import load_restorer, write_enhancer
from lightning_dr2.exports.unet import load_unet, write_unet
from lightning_dr2.jobs.restore import run_restore
from lightning_dr2.jobs.train_enhancer import load_dr2_unet
from lightning_dr2.nets.sparnet import SPARNet
from lightning_dr2.nets.unet import UNet
from lightning_dr2.weights import sha256sum

TINY_SPARNET = {"size": 32, "min_ch": 8, "max_ch": 32, "min_feat_size": 8, "res_depth": 0, "bottleneck_size": 32}
DR2_SETTING = ["dr2.N=2", "dr2.tau=2", "dr2.omega=4"]


@pytest.fixture(scope="module")
def unet_500(tmp_path_factory) -> Path:
    """A tiny seeded UNet exported with a 500-step linear process (its sidecar records it)."""
    net = seeded_random_(UNet.from_flags(TINY_EVAL_UNET), seed=0, std=0.05)
    return write_unet(net, TINY_EVAL_UNET, DiffusionConfig(steps=500), tmp_path_factory.mktemp("unet") / "unet.pt")


def _restore_cfg(unet: Path, *extra: str):
    overrides = [f"unet_weights={unet}", "enhancer.name=none", *DR2_SETTING, "num_workers=0", "progress_bar=false"]
    return load_config(None, [*overrides, *extra], RestoreConfig)


def test_diffusion_request_has_the_fields_of_diffusion_config() -> None:
    assert [f.name for f in fields(DiffusionRequest)] == [f.name for f in fields(DiffusionConfig)]
    assert DiffusionRequest(steps=1000, schedule=None).given() == {"steps": 1000}


def test_a_given_diffusion_field_wins_only_when_given(unet_500: Path) -> None:
    # Not given: the sidecar's 500 steps, for restore/eval and for the DR2 of enhancer training alike.
    assert DR2E.from_config(_restore_cfg(unet_500)).dr2.diffusion_config.steps == 500
    enhance = load_config("enhance_tiny", [f"dr2.unet_weights={unet_500}"])
    assert load_dr2_unet(enhance)[1].steps == 500
    # Given as 1000 (the schema's old default, so it used to be taken for "not set"): an error naming both.
    with pytest.raises(ValueError, match=r"diffusion.steps=1000 \(recorded: 500\).*unet\.json"):
        DR2E.from_config(_restore_cfg(unet_500, "diffusion.steps=1000"))
    with pytest.raises(ValueError, match=r"diffusion.steps=1000 \(recorded: 500\)"):
        load_dr2_unet(load_config("enhance_tiny", [f"dr2.unet_weights={unet_500}", "dr2.diffusion.steps=1000"]))
    # Given and agreeing with the record: fine.
    assert DR2E.from_config(_restore_cfg(unet_500, "diffusion.steps=500")).dr2.diffusion_config.steps == 500


def test_weights_without_a_record_take_the_given_fields_over_the_published_process(tmp_path: Path) -> None:
    bare = tmp_path / "bare.pt"
    torch.save(UNet.from_flags(TINY_EVAL_UNET).state_dict(), bare)
    assert load_unet(bare, TINY_EVAL_UNET).diffusion == PUBLISHED_DIFFUSION
    cosine = load_unet(bare, TINY_EVAL_UNET, diffusion=DiffusionRequest(schedule="cosine")).diffusion
    assert cosine == DiffusionConfig(steps=1000, schedule="cosine", predict="eps", learn_sigma=True)


def test_invalid_given_diffusion_values_fail_at_load_time() -> None:
    with pytest.raises(ValueError, match="diffusion.steps=10 is too short"):
        load_config(None, ["diffusion.steps=10"], RestoreConfig)
    with pytest.raises(ValueError, match=r"dr2.diffusion: diffusion.predict='y' is not one of"):
        load_config("enhance_tiny", ["dr2.diffusion.predict=y"])


def test_a_load_returns_what_it_loaded_and_reads_each_json_once(unet_500: Path, tmp_path: Path, monkeypatch) -> None:
    reads: list[str] = []
    real = unet_exports.read_sidecar

    def counting(weights, what):
        reads.append(what)
        return real(weights, what)

    monkeypatch.setattr(unet_exports, "read_sidecar", counting)
    monkeypatch.setattr(restorer_exports, "read_sidecar", counting)

    unet = load_unet(unet_500)
    assert (unet.path, unet.sha256) == (unet_500, sha256sum(unet_500))
    assert unet.record == json.loads(unet_500.with_suffix(".json").read_text())
    assert unet.diffusion.steps == 500 and isinstance(unet.module, UNet) and not unet.module.training

    export = write_enhancer(SPARNet(**TINY_SPARNET), "sparnet", TINY_SPARNET, tmp_path / "enhancer.pt")
    enhancer = load_restorer("sparnethd", str(export))  # the export's JSON, not the name, picks the network
    assert (enhancer.name, enhancer.options, enhancer.size) == ("sparnet", TINY_SPARNET, 32)
    assert (enhancer.path, enhancer.sha256) == (export, sha256sum(export))
    assert enhancer.record == {"generator": "sparnet", "options": TINY_SPARNET}
    assert reads == ["UNet sidecar", "enhancer description"]

    random = load_restorer("sparnet", "random", TINY_SPARNET)
    assert (random.path, random.sha256, random.record, random.size) == (None, "random", None, 32)
    assert load_restorer("none") is None


def test_the_enhancer_size_recorded_is_the_size_that_ran(unet_500: Path, tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.fromarray(render_face(0, 48)).save(inputs / "a.png")
    enhancer = ["enhancer.name=sparnet", "enhancer.weights=random"]
    enhancer += [f"enhancer.options.{k}={v}" for k, v in TINY_SPARNET.items()]
    cfg = _restore_cfg(unet_500, *enhancer)
    cfg.input, cfg.output = str(inputs), str(tmp_path / "out")
    assert run_restore(cfg).restored == 1
    settings = json.loads((tmp_path / "out" / "manifest.json").read_text())["settings"]
    ran = Image.open(tmp_path / "out" / "restored" / "a.png").size
    assert ran == (32, 32) and settings["enhancer_size"] == 32
    assert (settings["enhancer"], settings["enhancer_sha256"], settings["unet_sha256"]) == (
        "sparnet",
        "random",
        sha256sum(unet_500),
    )
    # A size the network cannot run at is refused, naming both (it used to run at 32 and record the setting).
    cfg = _restore_cfg(unet_500, *enhancer, "enhancer.size=256")
    cfg.input, cfg.output = str(inputs), str(tmp_path / "out256")
    with pytest.raises(ValueError, match=r"works at 32x32, not enhancer.size=256"):
        run_restore(cfg)
