"""The web demo without a browser: which models it finds, and its request handler on the packaged photos, an
aligned face, a photo without a face and bad inputs, with tiny random-weight networks (tests/conftest.py)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_EVAL_UNET, TINY_SPARNET_CONFIG, seeded_random_, tiny_sparnet
from PIL import Image

from lightning_dr2.cli import build_parser, main
from lightning_dr2.datasets.synthetic import render_face
from lightning_dr2.demo.examples import TILE, tile_size
from lightning_dr2.demo.handler import DemoSession
from lightning_dr2.demo.models import DemoMethod, DemoModels, newest_quickstart_run, resolve_models
from lightning_dr2.diffusion import PUBLISHED_DIFFUSION
from lightning_dr2.dr2.remover import DR2
from lightning_dr2.exports import write_enhancer, write_unet
from lightning_dr2.nets.unet import UNet

pytest.importorskip("skimage", reason="scikit-image ships the packaged test photos (dev extra)")
from lightning_dr2.jobs.face_benchmark import packaged_photo  # noqa: E402


def make_quickstart_run(runs: Path, name: str, enhancer: bool = True) -> Path:
    """A quickstart-shaped run: `<run>/export/unet_ema.pt` (+ sidecar) and the tiny enhancer's export under it."""
    run = runs / name
    unet = seeded_random_(UNet.from_flags(TINY_EVAL_UNET), 0, std=0.05)
    write_unet(unet, TINY_EVAL_UNET, PUBLISHED_DIFFUSION, run / "export" / "unet_ema.pt")
    if enhancer:
        net = tiny_sparnet()
        write_enhancer(net, "sparnet", TINY_SPARNET_CONFIG, run / "enhance_tiny" / "enhancer" / "export" / "e.pt")
    return run


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    return make_quickstart_run(tmp_path_factory.mktemp("runs"), "tiny")


@pytest.fixture(scope="module")
def session(tiny_run) -> DemoSession:
    """DR2 (32 px UNet) + a 64 px SPARNet, and that SPARNet alone as a 'baseline'."""
    run = newest_quickstart_run(tiny_run.parent)
    methods = [
        DemoMethod("DR2 + tiny", run.unet, "sparnet", run.enhancer),
        DemoMethod("tiny alone", None, "sparnet", run.enhancer),
    ]
    return DemoSession(DemoModels(methods, "test models"))


@pytest.fixture(scope="module")
def astronaut(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("photos") / "astronaut.png"
    Image.fromarray(packaged_photo("astronaut")).save(path)
    return path


def test_astronaut_photo_comes_back_at_its_size_with_only_the_face_changed(session, astronaut):
    photo = packaged_photo("astronaut")
    result = session.restore(astronaut, "DR2 + tiny", N=4, tau=22)
    assert result.ok, result.status
    assert result.restored.shape == result.dr2.shape == result.annotated.shape == photo.shape
    assert "1 face found, 1 restored" in result.status and "N=4, tau=22, omega=42" in result.status
    assert "DR2 + tiny" in result.status and "s on cpu" in result.status
    x0, y0, x1, y1 = (round(v) for v in result.faces[0].box)
    inside = (slice(y0, y1), slice(x0, x1))
    assert np.abs(result.restored[inside].astype(int) - photo[inside]).mean() > 5  # the face was replaced
    far = (slice(0, 40), slice(0, 40))  # a corner far from the face: paste-back leaves it alone
    np.testing.assert_array_equal(result.restored[far], photo[far])
    np.testing.assert_array_equal(result.dr2[far], photo[far])
    assert (result.annotated[inside] != photo[inside]).any()  # the box and landmarks are drawn
    np.testing.assert_array_equal(result.annotated[far], photo[far])


def test_an_aligned_face_is_restored_whole_at_the_networks_sizes(session):
    face = render_face(5, 80)[:, 8:72]  # 80 x 64: not square, centre-cropped
    result = session.restore(face, "DR2 + tiny", N=4, tau=10, aligned=True)
    assert result.ok, result.status
    assert result.restored.shape == (64, 64, 3)  # the enhancer's size
    assert result.dr2.shape == (32, 32, 3)  # the UNet's
    assert "centre-cropped to 64x64" in result.status
    np.testing.assert_array_equal(result.annotated, face)


def test_a_baseline_runs_alone_on_the_face_at_its_native_size(session, astronaut):
    result = session.restore(astronaut, "tiny alone", aligned=False)
    assert result.ok, result.status
    assert result.dr2 is None and result.restored.shape == packaged_photo("astronaut").shape
    assert "omega" not in result.status  # no DR2 stage, no DR2 settings


def test_a_photo_without_a_face_gets_a_message_and_its_picture(session):
    cat = packaged_photo("chelsea")
    result = session.restore(cat, "DR2 + tiny")
    assert not result.ok and result.restored is None
    assert result.status.startswith("No face to restore in this 451x300 photo")
    assert "aligned face" in result.status  # what to do if it was a crop
    np.testing.assert_array_equal(result.annotated, cat)


@pytest.mark.parametrize("N, tau", [(3, 22), (4, 99), (0, 10)])
def test_bad_settings_get_the_message_of_the_cli_check(session, astronaut, N, tau):  # noqa: N803
    unet = session.loaded(session.models.methods[0]).pipe.unet
    with pytest.raises(ValueError) as expected:  # SettingError, or N not dividing the UNet size
        DR2(unet).check_setting(N, tau, None, 32)
    result = session.restore(astronaut, "DR2 + tiny", N=N, tau=tau)
    assert not result.ok and result.status == f"Error: {expected.value}"


def test_bad_uploads_and_unknown_methods_get_messages(session, tmp_path):
    broken = tmp_path / "photo.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png")
    assert session.restore(broken, "DR2 + tiny").status.startswith(f"Error: bad image {broken}")
    assert session.restore(None, "DR2 + tiny").status == "Upload a photo or an aligned face first."
    assert "no demo method 'gone'" in session.restore(packaged_photo("astronaut"), "gone").status


def test_without_any_model_the_page_says_what_to_run_or_where_to_put_files(tmp_path):
    models = resolve_models(runs=tmp_path / "runs" / "quickstart", shipped=None)
    assert models.methods == []
    assert "make quickstart" in models.notice and "DR2_FFHQ.pkl" in models.notice
    assert str(Path(os.environ["DR2_WEIGHTS"])) in models.notice  # where it looked
    assert DemoSession(models).restore(packaged_photo("astronaut"), None).status == models.notice


def test_the_newest_quickstart_run_is_used_and_said_to_be_tiny(tmp_path):
    runs = tmp_path / "runs" / "quickstart"
    old, new = make_quickstart_run(runs, "old"), make_quickstart_run(runs, "new", enhancer=False)
    os.utime(old / "export" / "unet_ema.pt", (1, 1))
    models = resolve_models(runs=runs, shipped=None)
    assert [m.label for m in models.methods] == ["DR2 alone (quickstart run new)"]  # no enhancer trained yet
    assert "TINY" in models.notice and str(new) in models.notice and "at 32 px" in models.notice
    enhancer = new / "enhancer" / "export" / "enhancer_ema.pt"
    write_enhancer(tiny_sparnet(), "sparnet", TINY_SPARNET_CONFIG, enhancer)
    (method,) = resolve_models(runs=runs, shipped=None).methods
    assert method.label == "DR2 + tiny sparnet (quickstart run new)" and method.weights == enhancer
    assert method.unet == new / "export" / "unet_ema.pt"


def test_the_shipped_demo_networks_come_first_and_a_quickstart_run_after_them(tmp_path):
    shipped = make_quickstart_run(tmp_path, "shipped")
    pair = (shipped / "export" / "unet_ema.pt", shipped / "enhance_tiny" / "enhancer" / "export" / "e.pt")
    runs = tmp_path / "runs" / "quickstart"
    make_quickstart_run(runs, "mine", enhancer=False)
    models = resolve_models(runs=runs, shipped=pair)
    labels = [m.label for m in models.methods]
    assert labels == ["DR2 + tiny sparnet (quickstart demo networks)", "DR2 alone (quickstart run mine)"]
    assert (models.methods[0].unet, models.methods[0].weights) == pair
    assert "TINY" in models.notice and str(pair[0]) in models.notice and str(runs / "mine") in models.notice
    alone = resolve_models(runs=tmp_path / "none", shipped=pair)  # a fresh machine: no run, the shipped pair
    assert [m.label for m in alone.methods] == labels[:1]
    broken = resolve_models(runs=tmp_path / "none", shipped=(tmp_path / "gone.pt", pair[1]))
    assert broken.methods == [] and "No models found" in broken.notice


def test_a_fresh_clone_offers_the_shipped_quickstart_networks(tmp_path):
    models = resolve_models(runs=tmp_path / "none")  # the repository's experiments/quickstart_weights
    (method,) = models.methods
    assert (
        method.label == "DR2 + tiny sparnet (quickstart demo networks)"
        and method.unet.parent.name == "quickstart_weights"
    )
    assert "TINY" in models.notice and "at 32 px" in models.notice


def test_released_weights_win_over_quickstart_runs_and_serve_as_baselines(tmp_path):
    runs = tmp_path / "runs" / "quickstart"
    make_quickstart_run(runs, "r")
    weights = Path(os.environ["DR2_WEIGHTS"])
    weights.mkdir(parents=True)
    for name in ("DR2_FFHQ.pkl", "SPARNetHD_FFHQ_DR2aug.pth"):
        (weights / name).write_bytes(b"")  # found by name; not loaded here
    models = resolve_models(runs=runs)
    assert [m.label for m in models.methods] == ["DR2 + sparnethd (released)", "sparnethd alone (released)"]
    assert models.methods[0].unet == weights / "DR2_FFHQ.pkl" and models.methods[1].unet is None
    assert "Released weights" in models.notice and "quickstart" not in models.notice


def test_render_examples_writes_the_two_packaged_photos_side_by_side(tmp_path, capsys):
    make_quickstart_run(tmp_path / "runs" / "quickstart", "qs")  # the tests run in tmp_path
    assert main(["demo", "--render-examples", str(tmp_path / "images"), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "TINY" in printed and printed.count("1 face found, 1 restored") == 2
    for name in ("astronaut", "grace_hopper"):
        w, h = tile_size(packaged_photo(name).shape)
        assert max(w, h) == TILE
        grid = Image.open(tmp_path / "images" / f"demo_{name}.png")
        assert grid.size == (3 * w + 4 * 2, 2 * h + 3 * 2)  # 3 tiles x (photo, face enlarged), 2 px padding


def test_the_page_is_never_shared_and_needs_the_demo_extra(monkeypatch, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["demo", "--share", "public"])
    assert build_parser().parse_args(["demo"]).share == "never"
    monkeypatch.setitem(__import__("sys").modules, "gradio", None)  # as if the extra were not installed
    assert main(["demo"]) == 2
    assert "pip install 'lightning_dr2[demo]'" in capsys.readouterr().err


def test_without_models_the_page_shows_the_notice_and_no_restore_button(tmp_path):
    pytest.importorskip("gradio", reason="the demo's optional extra: pip install 'lightning_dr2[demo]'")
    from lightning_dr2.demo.app import build_app

    app = build_app(DemoSession(resolve_models(runs=tmp_path / "none", shipped=None)), tmp_path)
    props = {c["props"].get("elem_id"): c["props"] for c in app.get_config_file()["components"]}
    assert props["restore"]["interactive"] is False
    assert "make quickstart" in props["status"]["value"] and props["method"]["choices"] == []
