"""Enhancer training: discriminator, generators, losses, pair data, the tiny GAN run, export, resume, loading."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_ENHANCER_RUN
from omegaconf import OmegaConf
from torch.nn import functional as F  # noqa: N812

from lightning_dr2.config.loader import ConfigError
from lightning_dr2.config.recipes import load_config, schema_for
from lightning_dr2.datasets.enhancer_data import EnhancerPairs, PairAugment, Setting
from lightning_dr2.dr2.pipeline import DR2E
from lightning_dr2.image_io import write_png
from lightning_dr2.jobs.train_enhancer import train_enhancer
from lightning_dr2.losses import PerceptualLoss, feature_matching, hinge_d_losses, hinge_g_loss, ssim_loss
from lightning_dr2.modules.enhancer import EnhancerModule
from lightning_dr2.nets.discriminator import MultiScaleDiscriminator
from lightning_dr2.nets.loading import WeightsError
from lightning_dr2.nets.restorers import build_restorer, trainable_names
from lightning_dr2.nets.sparnet import SPARNet
from lightning_dr2.nets.vgg import VGG19_FILE, VGG19Features
from lightning_dr2.weights import MissingWeightsError

TINY_SPARNET = dict(size=32, min_ch=8, max_ch=32, min_feat_size=16, res_depth=0, bottleneck_size=32)
TINY_OPTIONS = {"sparnethd": dict(TINY_SPARNET), "sparnet": TINY_SPARNET, "unet": dict(size=32, base_ch=8, depth=2)}
TINY_D = dict(base_ch=8, max_ch=16, layers=2, scales=2)
# TINY_ENHANCER_RUN with DR2 settings of 2-3 UNet calls, so a run takes seconds on CPU.
TINY_RUN = [
    *TINY_ENHANCER_RUN,
    "data.synthetic_n=12",
    "dr2.settings=[{N: 4, tau: 2, omega: 3}, {N: 8, tau: 1, omega: 2}]",
    "optim.lr_g=1e-3",
    "trainer.log_every_n_steps=1",
]


def _cfg(tmp: Path, *extra: str):
    return load_config(
        "enhance_tiny",
        [*TINY_RUN, f"data.hq_root={tmp / 'faces'}", f"runs_dir={tmp / 'runs'}", *extra],
        schema=schema_for("enhance_tiny"),
    )


# -- networks ---------------------------------------------------------------------------------------
def test_discriminator_has_the_recipe_size_and_returns_features_per_scale() -> None:
    with torch.device("meta"):
        full = MultiScaleDiscriminator()
    assert sum(p.numel() for p in full.parameters()) == 11_750_403  # SPARNetHD's 11.75 M
    disc = MultiScaleDiscriminator(**TINY_D)
    out = disc(torch.randn(2, 3, 32, 32))
    assert len(out) == 2 and all(len(scale) == 2 + 2 for scale in out)  # stem, 2 layers, score
    assert [tuple(s[-1].shape) for s in out] == [(2, 1, 8, 8), (2, 1, 4, 4)]
    with pytest.raises(ValueError, match="at least"):
        disc(torch.randn(1, 3, 8, 8))


@pytest.mark.parametrize("name", ["enhance_sparnethd", "enhance_tiny"])
def test_enhancer_recipes_build(name: str) -> None:
    cfg = load_config(name, schema=schema_for(name))
    with torch.device("meta"):
        gen = build_restorer(cfg.generator.name, dict(cfg.generator.options))
        disc = MultiScaleDiscriminator(**dict(cfg.discriminator))
    assert gen.size == cfg.data.size
    assert disc.min_size <= cfg.data.size  # every scale of D fits the image
    if name == "enhance_sparnethd":
        assert sum(p.numel() for p in gen.parameters()) == 85_793_412  # the released SPARNetHD
        assert cfg.loss.l1 == 100 and cfg.loss.fm == 10 and list(cfg.optim.betas) == [0.5, 0.99]


@pytest.mark.parametrize("name", trainable_names())
def test_every_generator_builds_and_runs_at_tiny_size(name: str) -> None:
    net = build_restorer(name, TINY_OPTIONS[name])
    assert net(torch.randn(1, 3, 32, 32)).shape == (1, 3, 32, 32) and net.size == 32


def test_unknown_generator_and_bad_options_are_named() -> None:
    with pytest.raises(ValueError, match="registered"):
        build_restorer("esrgan")
    with pytest.raises(ValueError, match="widht"):
        build_restorer("unet", {"widht": 3})


# -- losses -----------------------------------------------------------------------------------------
def test_hinge_losses_by_hand() -> None:
    real = [[torch.zeros(1), torch.tensor([2.0, 0.5])], [torch.zeros(1), torch.tensor([-1.0])]]
    fake = [[torch.zeros(1), torch.tensor([-2.0, 0.0])], [torch.zeros(1), torch.tensor([3.0])]]
    d_real, d_fake = hinge_d_losses(real, fake)
    # scale 0: relu(1-2)=0, relu(1-0.5)=0.5 -> 0.25; scale 1: relu(1+1)=2 -> mean 1.125
    assert d_real.item() == pytest.approx((0.25 + 2.0) / 2)
    # scale 0: relu(1-2)=0, relu(1+0)=1 -> 0.5; scale 1: relu(1+3)=4 -> mean 2.25
    assert d_fake.item() == pytest.approx((0.5 + 4.0) / 2)
    assert hinge_g_loss(fake).item() == pytest.approx(-((-1.0) + 3.0) / 2)


def test_ssim_loss_is_zero_for_the_target_and_pulls_a_smoothed_image_back(tmp_path: Path) -> None:
    torch.manual_seed(0)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert ssim_loss(x, x).item() == pytest.approx(0.0, abs=1e-5)
    smooth = F.avg_pool2d(x, 3, stride=1, padding=1).requires_grad_(True)
    loss = ssim_loss(smooth, x)
    assert loss.item() > 0.1
    loss.backward()
    with torch.no_grad():
        assert ssim_loss(smooth - 0.5 * smooth.grad / smooth.grad.abs().max(), x) < loss  # a step down the gradient
    with pytest.raises(ConfigError, match="loss.ssim"):
        _cfg(tmp_path, "loss.ssim=-1")


def test_feature_matching_by_hand_and_real_features_detached() -> None:
    real = [
        [torch.ones(2, 2, requires_grad=True), torch.zeros(1)],
        [torch.full((3,), 2.0, requires_grad=True), torch.zeros(1)],
    ]
    fake = [
        [torch.zeros(2, 2, requires_grad=True), torch.full((1,), 9.0)],
        [torch.zeros(3, requires_grad=True), torch.zeros(1)],
    ]
    loss = feature_matching(fake, real)
    assert loss.item() == pytest.approx((1.0 + 2.0) / 2)  # score maps (last entries) are not matched
    loss.backward()
    assert real[0][0].grad is None and fake[0][0].grad is not None


def test_perceptual_loss_sums_l1_over_the_five_vgg19_slices() -> None:
    torch.manual_seed(0)
    vgg = VGG19Features(None)
    a, b = torch.rand(1, 3, 32, 32) * 2 - 1, torch.rand(1, 3, 32, 32) * 2 - 1
    feats_a, feats_b = vgg(a), vgg(b)
    assert [f.shape[1] for f in feats_a] == [64, 128, 256, 512, 512]
    assert [f.shape[-1] for f in feats_a] == [32, 16, 8, 4, 2]
    expected = sum((fa - fb).abs().mean() for fa, fb in zip(feats_a, feats_b, strict=True))
    assert PerceptualLoss(vgg)(a, b).item() == pytest.approx(expected.item(), rel=1e-6)


def test_generator_loss_is_the_weighted_sum(tmp_path: Path) -> None:
    module = EnhancerModule(
        {"name": "unet", "options": TINY_OPTIONS["unet"]},
        TINY_D,
        {"l1": 3.0, "vgg": 0.5, "fm": 2.0, "gan": 0.25},
        {"lr_g": 1e-4, "lr_d": 4e-4, "betas": [0.5, 0.99]},
        vgg_weights="random",
    )
    y, x = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    g = module.generator_losses(y, x)
    total = 3.0 * g["g_l1"] + 0.5 * g["g_vgg"] + 2.0 * g["g_fm"] + 0.25 * g["g_gan"]
    assert g["g_loss"].item() == pytest.approx(total.item(), rel=1e-6)
    assert g["g_l1"].item() == pytest.approx(F.l1_loss(module.generator(y), x).item(), rel=1e-6)
    # a D loss does not reach the generator, a G loss step with G's optimizer moves G only
    module.discriminator_losses(y, x)["d_loss"].backward()
    assert all(p.grad is None for p in module.generator.parameters())
    assert any(p.grad is not None for p in module.discriminator.parameters())


def test_missing_vgg19_weights_name_the_file() -> None:
    with pytest.raises(MissingWeightsError, match=VGG19_FILE):
        EnhancerModule({"name": "unet", "options": TINY_OPTIONS["unet"]}, TINY_D, {}, {}, vgg_weights=None)


def test_vgg19_weights_load_from_a_torchvision_state_dict(tmp_path: Path) -> None:
    torch.manual_seed(1)
    source = VGG19Features(None)
    state, index = {}, 0
    for block in source.slices:
        for layer in block:
            for name, value in layer.state_dict().items():
                state[f"features.{index}.{name}"] = value
            index += 1
    state["classifier.0.weight"] = torch.zeros(2, 2)  # the classifier is not used and not required
    torch.save(state, tmp_path / VGG19_FILE)
    loaded = VGG19Features(tmp_path / VGG19_FILE)
    x = torch.rand(1, 3, 16, 16)
    assert torch.equal(loaded(x)[-1], source(x)[-1])


# -- pairs ------------------------------------------------------------------------------------------
def test_pair_augmentation_flips_both_blurs_the_input_only_and_is_deterministic() -> None:
    rng = np.random.default_rng(0)
    dr2 = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    x = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    aug = PairAugment(sigma=(1.0, 2.0), flip=True)
    flipped = set()
    for seed in range(8):
        y, d, t = aug(dr2, x, seed)
        flip = bool(np.array_equal(t, x[:, ::-1]))
        assert flip or np.array_equal(t, x)
        assert np.array_equal(d, dr2[:, ::-1] if flip else dr2)  # same flip for both images
        assert not np.array_equal(y, d) and abs(y.astype(float).std() - d.std()) > 1  # the blur: input only
        flipped.add(flip)
        assert all(np.array_equal(a, b) for a, b in zip((y, d, t), aug(dr2, x, seed), strict=True))
    assert flipped == {True, False}


def _faces(root: Path, n: int, size: int = 32) -> list[Path]:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    return [write_png(root / f"f{i}.png", rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for i in range(n)]


def test_folder_pairs_and_their_errors(tmp_path: Path) -> None:
    files = _faces(tmp_path / "hq", 3, 48)
    dr2_root = tmp_path / "dr2"
    _faces(dr2_root, 2, 16)
    pairs = EnhancerPairs(tmp_path / "hq", files, 32, PairAugment((0.5, 1.0)), [Setting(8, 35)], dr2_root=dr2_root)
    item = pairs[(0, 3)]
    assert item["y"].shape == item["x"].shape == item["dr2"].shape == (3, 32, 32)
    assert torch.equal(pairs[(0, 3)]["y"], item["y"]) and not torch.equal(pairs[(0, 4)]["y"], item["y"])
    assert pairs.missing_dr2() == ["f2.png"]
    with pytest.raises(FileNotFoundError, match="f2.png"):
        pairs[2]
    write_png(dr2_root / "f1.png", np.zeros((16, 20, 3), np.uint8))
    with pytest.raises(ValueError, match="not square"):
        pairs[1]
    write_png(dr2_root / "f1.png", np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(ValueError, match="larger than the enhancer size"):
        pairs[1]


# -- strict init ------------------------------------------------------------------------------------
def test_generator_init_weights_load_strictly(tmp_path: Path) -> None:
    state = SPARNet(**TINY_SPARNET).state_dict()
    torch.save(state, tmp_path / "full.pth")
    module = EnhancerModule(
        {"name": "sparnet", "options": TINY_SPARNET}, TINY_D, {"vgg": 0}, {}, str(tmp_path / "full.pth")
    )
    assert all(torch.equal(v, state[k]) for k, v in module.generator.state_dict().items())
    dropped = next(k for k in state if k.endswith("weight_orig"))
    torch.save({k: v for k, v in state.items() if k != dropped}, tmp_path / "partial.pth")
    with pytest.raises(WeightsError, match=dropped.replace(".", r"\.")):
        EnhancerModule(
            {"name": "sparnet", "options": TINY_SPARNET}, TINY_D, {"vgg": 0}, {}, str(tmp_path / "partial.pth")
        )


# -- a tiny run: L1 falls, export loads into DR2E, resume equals the uninterrupted run -------------
def test_l1_only_run_leaves_the_discriminator_untrained_and_keeps_two_steps_per_batch(tmp_path: Path) -> None:
    """Without GAN and feature-matching terms D is never run (an L1 recipe would only pay for it); the idle D
    step keeps global_step = 2 x iterations, which the resume position and `iteration` rely on."""
    cfg = _cfg(
        tmp_path, "trainer.max_steps=6", "trainer.val_check_interval=6", "loss.gan=0", "loss.fm=0", "loss.ssim=1"
    )
    run = train_enhancer(cfg)
    module = run.trainer.lightning_module
    assert not module.adversarial and run.trainer.global_step == 12 and module.iteration == 6
    opt_g, opt_d = run.trainer.optimizers
    assert len(opt_g.state) > 0 and len(opt_d.state) == 0  # Adam keeps state only for parameters it stepped
    import csv

    rows = list(csv.DictReader(open(run.run_dir / "csv" / "metrics.csv")))
    l1 = [float(r["train/g_l1"]) for r in rows if r.get("train/g_l1")]
    assert len(l1) == 6 and all(not r.get("train/d_loss") for r in rows)
    assert len([r for r in rows if r.get("train/g_ssim")]) == 6  # the optional SSIM term is trained and logged


def test_tiny_run_learns_exports_and_the_export_is_an_enhancer(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, "trainer.max_steps=10", "trainer.val_check_interval=10", "run=full")
    tiny_run = train_enhancer(cfg)
    import csv

    rows = list(csv.DictReader(open(tiny_run.run_dir / "csv" / "metrics.csv")))
    l1 = [float(r["train/g_l1"]) for r in rows if r.get("train/g_l1")]
    assert len(l1) == 10 and np.mean(l1[-3:]) < np.mean(l1[:3])
    assert {"train/d_real", "train/d_fake", "train/g_fm", "train/g_gan"} <= set(rows[0])
    assert tiny_run.grid is not None and tiny_run.grid.is_file()
    meta = json.loads(tiny_run.export_path.with_suffix(".json").read_text())
    assert meta == {"generator": "sparnet", "options": {**TINY_SPARNET}}
    pipe = DR2E.from_weights(
        "random",
        enhancer_weights=str(tiny_run.export_path),
        unet_flags=dict(cfg.dr2.net),
        N=4,
        tau=2,
        omega=3,
    )
    assert pipe.enhancer_size == 32
    out = pipe.restore(torch.rand(2, 3, 40, 40) * 2 - 1)
    assert out.shape == (2, 3, 32, 32) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="differ"):
        DR2E.from_weights("random", enhancer_weights=str(tiny_run.export_path), enhancer_options={"max_ch": 64})
    # eval's method label names the exported network, whatever enhancer.name was left at
    from lightning_dr2.jobs.evaluate import default_method

    exported = OmegaConf.create({"enhancer": {"name": "sparnethd", "weights": str(tiny_run.export_path)}})
    assert default_method(exported) == "DR2+sparnet"
    assert default_method(OmegaConf.create({"enhancer": {"name": "sparnethd", "weights": None}})) == "DR2+sparnethd"


def _folder_dr2(tmp: Path) -> None:
    """DR2 stand-ins for folder mode: the HQ faces blurred by a 16 px round trip, at the recipe UNet's 32 px (what
    matters here is the data path)."""
    from lightning_dr2.datasets.synthetic import generate_faces

    generate_faces(tmp / "faces", n=12, size=32)
    for path in sorted((tmp / "faces").glob("*.png")):
        from PIL import Image

        (tmp / "dr2").mkdir(exist_ok=True)
        small = Image.open(path).convert("RGB").resize((16, 16), Image.BICUBIC)
        small.resize((32, 32), Image.BICUBIC).save(tmp / "dr2" / path.name)


def test_resume_equals_the_uninterrupted_run(tmp_path: Path) -> None:
    _folder_dr2(tmp_path)
    common = [
        "data.mode=folder",
        f"data.dr2_root={tmp_path / 'dr2'}",
        "trainer.limit_val_batches=0",
        "checkpoint.every_n_steps=3",
    ]
    whole = train_enhancer(_cfg(tmp_path, *common, "trainer.max_steps=6", "run=whole"))
    train_enhancer(_cfg(tmp_path, *common, "trainer.max_steps=3", "run=split"))
    resumed = train_enhancer(_cfg(tmp_path, *common, "trainer.max_steps=6", "run=split", "resume=true"))
    assert resumed.trainer.global_step == whole.trainer.global_step == 12
    a, b = torch.load(whole.export_path), torch.load(resumed.export_path)
    for key in a:
        torch.testing.assert_close(b[key], a[key], atol=1e-6, rtol=0)
    d_whole, d_resumed = whole.module.discriminator.state_dict(), resumed.module.discriminator.state_dict()
    for key, value in d_whole.items():
        torch.testing.assert_close(d_resumed[key], value, atol=1e-6, rtol=0, msg=key)


def test_nan_generator_steps_are_skipped_and_stop_the_run(tmp_path: Path, monkeypatch) -> None:
    """A G loss that is NaN every time: G and its EMA never change, D keeps training, and after
    trainer.max_bad_steps G steps in a row the run stops naming the step; nothing is exported."""
    from lightning_dr2.modules.guards import NonFiniteTrainingError

    _folder_dr2(tmp_path)
    losses = EnhancerModule.generator_losses

    def nan_generator_losses(self, y, x):
        terms = losses(self, y, x)
        terms["g_loss"] = terms["g_loss"] * float("nan")
        return terms

    monkeypatch.setattr(EnhancerModule, "generator_losses", nan_generator_losses)
    cfg = _cfg(
        tmp_path,
        "data.mode=folder",
        f"data.dr2_root={tmp_path / 'dr2'}",
        "trainer.limit_val_batches=0",
        "trainer.max_steps=10",
        "trainer.max_bad_steps=3",
        "run=nan",
    )
    # D1 G1 D2 G2 D3 G3: the third skipped G step is global step 5, each skipped step counted as a step
    with pytest.raises(NonFiniteTrainingError, match=r"stopped at step 5: .*max_bad_steps=3"):
        train_enhancer(cfg)
    assert not (tmp_path / "runs" / "enhance_tiny" / "nan" / "export").exists()
    with pytest.raises(ConfigError, match=r"trainer.precision=16-mixed"):
        train_enhancer(_cfg(tmp_path, "trainer.precision=16-mixed", "run=fp16"))


def test_d_step_then_g_step_each_change_only_their_own_parameters(tmp_path: Path, monkeypatch) -> None:
    """Within one iteration the D step moves D's parameters only and the G step G's only (spectral-norm
    power-iteration buffers are not parameters and may move in either)."""
    _folder_dr2(tmp_path)
    steps = EnhancerModule._step
    moved: list[tuple[bool, bool]] = []

    def snapshot(module: EnhancerModule) -> dict[str, torch.Tensor]:
        return {name: p.detach().clone() for name, p in module.named_parameters()}

    def changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor], prefix: str) -> bool:
        return any(not torch.equal(before[k], after[k]) for k in before if k.startswith(prefix))

    def spy(self, optimizer, loss, net, guard):
        before = snapshot(self)
        steps(self, optimizer, loss, net, guard)
        after = snapshot(self)
        moved.append((changed(before, after, "generator."), changed(before, after, "discriminator.")))

    monkeypatch.setattr(EnhancerModule, "_step", spy)
    cfg = _cfg(
        tmp_path,
        "data.mode=folder",
        f"data.dr2_root={tmp_path / 'dr2'}",
        "trainer.limit_val_batches=0",
        "trainer.max_steps=2",
        "checkpoint.every_n_steps=0",
        "run=own",
    )
    train_enhancer(cfg)
    assert moved == [(False, True), (True, False), (False, True), (True, False)]  # D, G, D, G
