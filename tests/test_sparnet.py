"""SPARNet / SPARNetHD: compatibility with the released checkpoints (fixture + key manifest), spectral-norm
folding, loading and input checks."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import load_fixture

from lightning_dr2.nets.loading import WeightsError
from lightning_dr2.nets.sparnet import HD_CONFIG, SPARNet, fold_spectral_norm, load_sparnet

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny() -> dict:
    return load_fixture("sparnet_tiny.pt")


# A 16x16 network just big enough for its attention hourglasses, for tests that need no reference weights.
SMALL = dict(size=16, min_ch=8, max_ch=32, min_feat_size=4, res_depth=1, bottleneck_size=16)


def _tiny_model(tiny: dict) -> SPARNet:
    model = SPARNet(**tiny["config"])
    model.load_state_dict(tiny["state_dict"], strict=True)
    return model.eval()


def _max_err(model: SPARNet, x: torch.Tensor, expected: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(x) - expected).abs().max().item()


def test_reproduces_reference_output(tiny):
    model = _tiny_model(tiny)
    with torch.no_grad():
        out = model(tiny["x"])
    assert out.shape == tiny["out"].shape
    assert (out - tiny["out"]).abs().max().item() <= 1e-4


def test_hd_matches_released_keys_and_size(fixtures_dir):
    manifest = json.loads((fixtures_dir / "sparnethd_keys.json").read_text())
    with torch.device("meta"):  # 86 M parameters: shapes only, no memory, no init time
        model = SPARNet.hd()
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert shapes == manifest["state_dict"]
    assert len(shapes) == 892
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == manifest["num_params"]
    assert abs(n_params / 1e6 - 85.79) <= 0.01
    assert {k: v for k, v in manifest["config"].items()} == HD_CONFIG
    assert SPARNet().config == HD_CONFIG  # the defaults are the HD model


def test_fold_spectral_norm_keeps_eval_output():
    model, x = SPARNet(**SMALL), torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        for _ in range(3):  # train-mode power iterations move u, v away from their random init
            model(x)
        model.eval()
        before = model(x)
        assert fold_spectral_norm(model) is model
        after = model(x)
    assert (before - after).abs().max().item() <= 1e-5
    assert model.config["spectral_norm"] is False
    keys = model.state_dict().keys()
    assert not any(k.endswith(("weight_orig", "weight_u", "weight_v")) for k in keys)
    # The folded weights are the state dict of the spectral_norm=False network.
    plain = SPARNet(**SMALL, spectral_norm=False).eval()
    plain.load_state_dict(model.state_dict(), strict=True)
    with torch.no_grad():
        assert torch.equal(plain(x), after)


def test_fold_spectral_norm_is_noop_without_it(tiny):
    model = SPARNet(**tiny["config"], spectral_norm=False).eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert fold_spectral_norm(model) is model
    assert model.state_dict().keys() == state.keys()
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_without_spectral_norm_has_plain_weights(tiny):
    sn_keys = SPARNet(**tiny["config"]).state_dict().keys()
    keys = set(SPARNet(**tiny["config"], spectral_norm=False).state_dict())
    assert not any(k.endswith(("weight_orig", "weight_u", "weight_v")) for k in keys)
    expected = {k.removesuffix("_orig") for k in sn_keys if not k.endswith(("weight_u", "weight_v"))}
    assert keys == expected
    assert "encoder.0.conv2d.weight" in keys


@pytest.mark.parametrize("prefix", ["", "module."])
def test_load_sparnet(tiny, tmp_path, prefix):
    path = tmp_path / "sparnet.pth"
    torch.save({prefix + k: v for k, v in tiny["state_dict"].items()}, path)
    model = load_sparnet(path, **tiny["config"])
    assert not model.training
    assert _max_err(model, tiny["x"][:1], tiny["out"][:1]) <= 1e-4


def test_load_sparnet_follows_folded_file(tiny, tmp_path):
    """Folding the reference model keeps the reference output; the export loads without spectral norm."""
    path = tmp_path / "folded.pth"
    torch.save(fold_spectral_norm(_tiny_model(tiny)).state_dict(), path)
    model = load_sparnet(path, **tiny["config"])  # spectral_norm inferred from the keys: off
    assert "encoder.0.conv2d.weight" in model.state_dict()
    assert _max_err(model, tiny["x"][:1], tiny["out"][:1]) <= 1e-4


def test_load_sparnet_wrong_file(tiny, tmp_path):
    path = tmp_path / "other.pth"
    sd = {k: v for k, v in tiny["state_dict"].items() if not k.startswith("out_conv.")}
    sd["head.weight"] = torch.zeros(3)
    torch.save(sd, path)
    with pytest.raises(WeightsError, match=r"missing keys \(4\): out_conv\.conv2d\.bias") as err:
        load_sparnet(path, **tiny["config"])
    assert "head.weight" in str(err.value) and str(path) in str(err.value)


@pytest.mark.parametrize("shape", [(1, 1, 64, 64), (1, 4, 64, 64), (1, 3, 32, 32), (1, 3, 64, 48), (3, 64, 64)])
def test_bad_input_shape(tiny, shape):
    model = SPARNet(**tiny["config"])
    with pytest.raises(ValueError, match=r"expects images of shape \(B, 3, 64, 64\)"):
        model(torch.zeros(shape))


@pytest.mark.parametrize(
    "overrides, match",
    [
        (dict(norm_type="gn"), "norm_type"),
        (dict(att_name="cbam"), "att_name"),
        (dict(size=48), "size must be"),
        (dict(min_ch=128), "min_ch"),
        (dict(bottleneck_size=3), "bottleneck_size"),
        (dict(size=16, min_feat_size=4), "too small for an attention hourglass"),
    ],
)
def test_bad_config(tiny, overrides, match):
    with pytest.raises(ValueError, match=match):
        SPARNet(**{**tiny["config"], **overrides})


@pytest.mark.parametrize(
    "overrides",
    [dict(att_name="spar3d"), dict(att_name="none"), dict(norm_type="bn"), dict(norm_type="none")],
)
def test_variants_build_and_run(overrides):
    model = SPARNet(**SMALL, **overrides).eval()
    keys = model.state_dict()
    if overrides.get("att_name") == "spar3d":  # one attention map per feature channel
        assert keys["decoder.1.att_func.out_block.0.conv2d.weight_orig"].shape == (10, 64, 3, 3)
    if overrides.get("att_name") == "none":
        assert not any(".att_func." in k for k in keys)
    if overrides.get("norm_type") == "bn":
        assert "encoder.1.conv1.norm.norm.running_mean" in keys
    if overrides.get("norm_type") == "none":
        assert "encoder.1.conv1.conv2d.bias" in keys and not any(".norm." in k for k in keys)
    with torch.no_grad():
        out = model(torch.rand(2, 3, 16, 16) * 2 - 1)
    assert out.shape == (2, 3, 16, 16) and torch.isfinite(out).all()


def test_backward_reaches_every_parameter():
    model = SPARNet(**SMALL).train()
    model(torch.rand(1, 3, 16, 16) * 2 - 1).square().mean().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("spectral_norm", [True, False])
def test_residual_starts_as_identity_and_learns_a_correction(spectral_norm):
    """residual=True: output = input + gain * net(input) with the gain at 0, so training starts from the identity."""
    torch.manual_seed(0)
    model = SPARNet(**SMALL, spectral_norm=spectral_norm, residual=True).train()
    x, target = torch.rand(2, 3, 16, 16) * 2 - 1, torch.rand(2, 3, 16, 16) * 2 - 1
    assert torch.equal(model(x), x)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(5):
        loss = (model(x) - target).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert model.residual_gain.item() != 0.0 and losses[-1] < losses[0]


def test_residual_adds_one_key_and_keeps_the_released_layout():
    plain = SPARNet(**SMALL).state_dict()
    residual = SPARNet(**SMALL, residual=True)
    assert set(residual.state_dict()) == set(plain) | {"residual_gain"}
    assert residual.config == {**SPARNet(**SMALL).config, "residual": True}
    assert "residual" not in SPARNet.hd().config  # off: the config (and the keys, see above) of the release


def test_residual_export_round_trip(tmp_path):
    """A residual generator exported like train-enhancer does loads back with its gain and folds to the same output."""
    from lightning_dr2.exports.restorer import load_restorer, write_enhancer

    options = {**SMALL, "residual": True}
    model = SPARNet(**options)
    with torch.no_grad():
        model.residual_gain.fill_(0.5)
        x = torch.rand(2, 3, 16, 16) * 2 - 1
        for _ in range(2):
            model(x)  # train-mode power iterations
        expected = model.eval()(x)
    path = write_enhancer(model, "sparnet", options, tmp_path / "enhancer_ema.pt")
    loaded = load_restorer("sparnet", str(path)).module
    assert loaded.residual_gain.item() == 0.5
    with torch.no_grad():
        assert (loaded(x) - expected).abs().max().item() <= 1e-5


def _reference_widths(size: int, min_ch: int, max_ch: int, min_feat_size: int) -> list[int]:
    """Face-SPARNet's rule written out: clip the start, double from the clipped value, clip each level."""
    steps = (size // min_feat_size).bit_length() - 1
    n = max(min_ch, min(max_ch // (steps + 1), max_ch))
    widths = []
    for _ in range(steps + 1):
        widths.append(max(min_ch, min(n, max_ch)))
        n *= 2
    return widths


@pytest.mark.parametrize(
    "config",
    [
        dict(size=64, min_ch=32, max_ch=64, min_feat_size=8, res_depth=1, bottleneck_size=8),  # start clipped up
        dict(size=32, min_ch=16, max_ch=32, min_feat_size=4, res_depth=1, bottleneck_size=16),  # start clipped up
        SMALL,  # start not clipped
    ],
)
def test_widths_follow_reference_when_min_ch_clips(config):
    """Encoder block i maps width i -> i+1, the decoder mirrors it; checked on the conv weight shapes."""
    widths = _reference_widths(config["size"], config["min_ch"], config["max_ch"], config["min_feat_size"])
    model = SPARNet(**config, spectral_norm=False)
    assert model.encoder[0].conv2d.weight.shape[0] == widths[0]
    steps = len(widths) - 1
    for i in range(steps):
        conv = model.encoder[i + 1].conv1.conv2d.weight
        assert tuple(conv.shape[:2]) == (widths[i + 1], widths[i]), f"encoder.{i + 1}"
        conv = model.decoder[i].conv1.conv2d.weight
        assert tuple(conv.shape[:2]) == (widths[steps - i - 1], widths[steps - i]), f"decoder.{i}"
    assert model.out_conv.conv2d.weight.shape[1] == widths[0]
    with torch.no_grad():
        assert model(torch.zeros(1, 3, config["size"], config["size"])).shape == (1, 3, config["size"], config["size"])
