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
from lightning_dr2.jobs.bench import RESTORER_TINY_OPTIONS
from lightning_dr2.jobs.restore import run_restore

pytestmark = pytest.mark.usefixtures("one_thread")

GFPGAN_TINY = RESTORER_TINY_OPTIONS["gfpgan_v1.4"]
VQFR_TINY = RESTORER_TINY_OPTIONS["vqfr_v2"]
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


@pytest.mark.parametrize("name", ["gfpgan_v1.4", "restoreformer", "codeformer", "vqfr_v1", "vqfr_v2", "gpen_512"])
def test_baseline_input_preparation_is_the_scripts(faces: Path, name: str) -> None:
    """Each baseline's feed (size, resize, range) equals a cv2 transcription of its script's (GFPGANer, CodeFormer
    and VQFR's demo feed as GFPGANer does; GPEN's face_gan.py: resize, /255, (x - 0.5) / 0.5, BGR->RGB)."""
    from lightning_dr2.datasets.predict_inputs import RestorerInputs
    from lightning_dr2.nets.restorers import RESTORERS

    spec = RESTORERS[name]
    assert spec.resize == "cv2_linear" and spec.size == 512 and "INTER_LINEAR" in spec.feed
    data = RestorerInputs(faces, ["f0.png", "f1.png"], 64, 0, "center_crop", spec.resize)
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


# ------------------------------------------------------------------------------------------- eval with methods

TABLE = ["gfpgan_v1.4", "vqfr_v2", "DR2+gfpgan_v1.4", "DR2+vqfr_v2", "DR2"]


@pytest.fixture(scope="module")
def testset(tmp_path_factory) -> Path:
    from conftest import build_tiny_testset

    return build_tiny_testset(tmp_path_factory.mktemp("eval"), n=3)


def methods_eval_cfg(testset: Path, nets: dict, runs: Path, *extra: str, splits: str = "x4_mild"):
    from test_evaluation import eval_cfg

    return eval_cfg(
        testset,
        nets["unet"],
        runs,
        f"methods=[{', '.join(TABLE)}]",
        restorers_override(nets),
        "settings=[{N: 4, tau: 4, omega: 6}, {N: 4, tau: 6, omega: 8}]",
        *extra,
        splits=splits,
    )


def test_eval_methods_one_row_per_method_dr2_once_per_image_and_setting(
    testset: Path, nets: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import wandb

    from lightning_dr2.dr2.remover import DR2
    from lightning_dr2.jobs.evaluate import run_eval

    calls: list[int] = []
    original = DR2.__call__

    def counting(self, x, *args, **kwargs):
        calls.append(x.shape[0])
        return original(self, x, *args, **kwargs)

    monkeypatch.setattr(DR2, "__call__", counting)
    started: list[dict] = []

    class FakeRun:
        def __init__(self, kwargs: dict) -> None:
            self.kwargs = kwargs

        def log(self, data: dict) -> None:
            pass

        def finish(self) -> None:
            started.append(self.kwargs)

    monkeypatch.setattr(wandb, "init", lambda **kwargs: FakeRun(kwargs))
    result = run_eval(methods_eval_cfg(testset, nets, tmp_path, "wandb.mode=offline"))
    settings = ["N4_tau4_omega6", "N4_tau6_omega8"]
    expected = {(m, "") for m in TABLE[:2]} | {(m, s) for m in TABLE[2:] for s in settings}
    assert sorted((r["method"], r["setting"]) for r in result.rows) == sorted(expected)
    assert all(r["n_images"] == 3 and r["failed"] == 0 for r in result.rows)
    assert sum(calls) == 3 * len(settings)  # DR2 once per image and setting, shared by DR2, DR2+gfpgan, DR2+vqfr
    rows = {(r["method"], r["setting"]): r for r in result.rows}
    # DR2+X scored X's own outputs, at X's size; the baselines did not run DR2
    assert rows[("DR2+gfpgan_v1.4", settings[0])]["metrics"] != rows[("DR2", settings[0])]["metrics"]
    assert "unet_sha256" not in rows[("vqfr_v2", "")]["provenance"]
    assert rows[("DR2+vqfr_v2", settings[1])]["provenance"]["network_sha256"] == sha256_of(nets["vqfr_v2"])
    run = result.run_dir / "restored" / "tiny" / "x4_mild"
    assert read_image(next((run / "DR2+vqfr_v2" / settings[0] / "restored").iterdir())).shape == (32, 32, 3)
    assert read_image(next((run / "gfpgan_v1.4" / "restored").iterdir())).shape == (64, 64, 3)
    # one W&B run per method, named by it; a baseline's run carries no DR2 key, a DR2+X run its own enhancer
    by_method = {k["config"]["method"]: k for k in started}
    assert list(by_method) == TABLE
    assert by_method["gfpgan_v1.4"]["id"] == "eval-r" and by_method["vqfr_v2"]["id"] == "eval-r-vqfr_v2"
    baseline = by_method["vqfr_v2"]["config"]
    assert not [k for k in baseline if k.split(".")[0] in ("unet_weights", "dr2", "enhancer", "net", "diffusion")]
    assert baseline["restorer.name"] == "vqfr_v2" and baseline["settings"] == []
    plus = by_method["DR2+gfpgan_v1.4"]["config"]
    assert plus["enhancer.name"] == "gfpgan_v1.4" and plus["enhancer.weights"] == str(nets["gfpgan_v1.4"])
    assert "unet_weights" in plus and plus["methods"] == ["DR2+gfpgan_v1.4"]
    assert by_method["DR2"]["config"]["enhancer.name"] == "none"

    calls.clear()
    again = run_eval(methods_eval_cfg(testset, nets, tmp_path, "run=r"))
    assert calls == [] and len(again.rows) == len(result.rows)  # everything reused by fingerprint


def sha256_of(path: Path) -> str:
    from lightning_dr2.weights import sha256sum

    return sha256sum(path)


def test_eval_methods_missing_files_fail_before_any_work_naming_each(testset: Path, nets: dict, tmp_path: Path):
    from test_evaluation import eval_cfg

    from lightning_dr2.jobs.evaluate import run_eval
    from lightning_dr2.weights import MissingWeightsError

    cfg = eval_cfg(
        testset,
        nets["unet"],
        tmp_path,
        "methods=[gfpgan_v1.4, DR2+vqfr_v1, vqfr_v2]",
        f"restorers=[{{name: vqfr_v2, weights: {nets['vqfr_v2']}, options: {options_yaml(VQFR_TINY)}}}]",
        "run=missing",
    )
    with pytest.raises(MissingWeightsError) as err:
        run_eval(cfg)
    message = str(err.value)
    assert "GFPGANv1.4.pth" in message and "VQFR_v1-33a1fac5.pth" in message and "skip_missing_weights" in message
    assert not (tmp_path / "eval").exists() or not list((tmp_path / "eval").rglob("restored"))
    cfg.skip_missing_weights = True
    result = run_eval(cfg)
    assert {r["method"] for r in result.rows} == {"vqfr_v2"}
    saved = json.loads((result.run_dir / "results.json").read_text())
    assert {"gfpgan_v1.4", "DR2+vqfr_v1"} <= set(saved["notes"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("methods=[DR2+none]", "methods\\[0\\]='DR2\\+none'.*DR2 alone is the method 'DR2'"),
        ("methods=[gfpgan_v1.4, gfpgan_v1.4]", "more than once"),
        ("methods=[GFPGAN]", "unknown method 'GFPGAN'.*registered networks"),
        ("methods=[DR2]\nsettings=[]", "must list DR2 \\(N, tau\\) settings"),
    ],
)
def test_eval_methods_are_checked_at_load_time(testset: Path, nets: dict, tmp_path: Path, override, message):
    from test_evaluation import eval_cfg

    with pytest.raises(ConfigError, match=message):
        eval_cfg(testset, nets["unet"], tmp_path, *override.split("\n"))


# ------------------------------------------------------------------------------------------- the table recipe

TABLE_FILES = {
    "DR2_FFHQ.pkl",
    "GPEN-BFR-512.pth",
    "GFPGANv1.4.pth",
    "codeformer.pth",
    "SPARNetHD_FFHQ_DR2aug.pth",
    "VQFR_v1-33a1fac5.pth",
    "vgg16-397923af.pth",
    "pt_inception-2015-12-05-6726825d.pth",
    "resnet18_110.pth",
    "inception_FFHQ_512-f7b384ab.pth",
}


def test_table_recipe_lists_every_file_it_needs_and_where_to_get_it(tmp_path: Path, capsys) -> None:
    from lightning_dr2.cli import main
    from lightning_dr2.config.pipeline import EvalConfig
    from lightning_dr2.config.recipes import load_config
    from lightning_dr2.jobs.needs import eval_needs

    cfg = load_config("eval_dr2_table", [], schema=EvalConfig)
    assert list(cfg.methods) == [
        "gpen_512",
        "gfpgan_v1.4",
        "codeformer",
        "DR2+sparnethd",
        "DR2+vqfr_v1",
        "DR2+gfpgan_v1.4",
        "DR2+codeformer",
    ]
    needs = eval_needs(cfg)
    assert {file for file, _ in needs} == TABLE_FILES
    assert ("GFPGANv1.4.pth", "network gfpgan_v1.4 for gfpgan_v1.4, DR2+gfpgan_v1.4") in needs
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "GPEN-BFR-512.pth").write_bytes(b"x")
    assert main(["weights", "--for", "eval_dr2_table", "--weights-dir", str(tmp_path / "w")]) == 0
    out = capsys.readouterr().out
    assert "1 of 10 files present" in out and f"present: {tmp_path / 'w' / 'GPEN-BFR-512.pth'}" in out
    for name in TABLE_FILES - {"GPEN-BFR-512.pth"}:
        assert f"\n{name}: " in out  # how to get each missing file
    assert "python -m lightning_dr2 weights --fetch GFPGANv1.4.pth" in out


def test_eval_report_shows_the_published_rows_beside(testset: Path, nets: dict, tmp_path: Path) -> None:
    from test_evaluation import eval_cfg

    from lightning_dr2.jobs.evaluate import run_eval

    override = f"restorers=[{{name: vqfr_v2, weights: {nets['vqfr_v2']}, options: {options_yaml(VQFR_TINY)}}}]"
    cfg = eval_cfg(
        testset,
        nets["unet"],
        tmp_path,
        "methods=[vqfr_v2]",
        override,
        "published=dr2_cvpr2023",
        "reference=true",
        splits="x4_mild",
    )
    result = run_eval(cfg)
    report = result.report_md.read_text()
    assert "| DR2+VQFR | celeba_test | x16 (paper)" in report and "Published numbers (dr2_cvpr2023" in report
    # published rows are shown, never results; reference=true adds the input row, as without methods
    assert [(r["method"], r["setting"]) for r in result.rows] == [("vqfr_v2", "input"), ("vqfr_v2", "")]
