"""The ADM UNet: guided-diffusion keys/shapes, reference numerics, variants, precision, memory format."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import fixture_path, load_fixture

from lightning_dr2.nets.loading import WeightsError, load_into
from lightning_dr2.nets.unet import (
    DR2_FFHQ256_FLAGS,
    FLAG_DEFAULTS,
    QKVAttention,
    QKVAttentionLegacy,
    UNet,
    normalise_flags,
    timestep_embedding,
)

TINY = {
    "image_size": 32,
    "num_channels": 32,
    "num_res_blocks": 1,
    "channel_mult": "1,2",
    "attention_resolutions": "16",
    "num_head_channels": 16,
    "dropout": 0.0,
}


def _randomise(model: UNet, seed: int = 0) -> UNet:
    """Give every parameter non-zero values, so zero-initialised branches do not hide bugs."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    return model


def _inputs(model: UNet, batch: int = 2, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    size = model.image_size
    x = torch.randn(batch, 3, size, size, generator=gen)
    t = torch.randint(0, 1000, (batch,), generator=gen)
    return x, t


@pytest.fixture(scope="module")
def tiny_fixture() -> dict:
    return load_fixture("adm_unet_tiny.pt")


@pytest.fixture(scope="module")
def tiny_model(tiny_fixture: dict) -> UNet:
    return load_into(UNet.from_flags(tiny_fixture["flags"]), tiny_fixture["state_dict"]).eval()


# --- compatibility with guided-diffusion ---------------------------------------------------------------


def test_dr2_ffhq256_keys_shapes_and_param_count() -> None:
    path = fixture_path("adm_unet_dr2_ffhq256_keys.json")
    ref = json.loads(path.read_text())
    with torch.device("meta"):
        model = UNet.from_flags(ref["flags"])
    got = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert sorted(set(got) - set(ref["state_dict"])) == []
    assert sorted(set(ref["state_dict"]) - set(got)) == []
    assert got == ref["state_dict"]
    assert sum(p.numel() for p in model.parameters()) == ref["num_params"] == 93_563_910
    assert model.out_channels == 6 and model.channel_mult == (1, 1, 2, 2, 4, 4)
    assert model.attention_resolutions == (16,)  # resolution 16 at 256 px -> ds 16
    # The constant the pipeline and benchmarks use is exactly the checkpoint's flags.
    assert {k: v for k, v in DR2_FFHQ256_FLAGS.items() if k in ref["flags"]} == ref["flags"]


def test_tiny_fixture_matches_reference_output(tiny_fixture: dict, tiny_model: UNet) -> None:
    with torch.no_grad():
        out = tiny_model(tiny_fixture["x"], tiny_fixture["t"])
    assert out.shape == tiny_fixture["out"].shape
    assert (out - tiny_fixture["out"]).abs().max().item() < 1e-4


def test_remover_fixture_loads_strictly() -> None:
    fx = load_fixture("dr2_remover_tiny.pt")
    model = load_into(UNet.from_flags(fx["flags"]), fx["state_dict"], "dr2_remover_tiny.pt")
    x = torch.zeros(1, 3, 64, 64)
    with torch.no_grad():
        assert model.eval()(x, torch.tensor([999])).shape == (1, 6, 64, 64)


def test_mismatched_weights_name_missing_and_unexpected_keys(tiny_fixture: dict) -> None:
    other = dict(tiny_fixture["flags"], resblock_updown=False, learn_sigma=False)
    with pytest.raises(WeightsError) as info:
        load_into(UNet.from_flags(other), tiny_fixture["state_dict"], "adm_unet_tiny.pt")
    msg = str(info.value)
    assert "adm_unet_tiny.pt" in msg
    # conv Downsample/Upsample instead of ResBlock(down/up): 2 down + 2 up, weight and bias each
    assert "missing keys (8): input_blocks.2.0.op.weight" in msg
    assert "unexpected keys" in msg and "input_blocks.2.0.in_layers.0.weight" in msg
    assert "out.2.weight: file (6, 32, 3, 3) vs model (3, 32, 3, 3)" in msg


# --- numerics of the parts -------------------------------------------------------------------------------


def test_timestep_embedding_formula_and_fp32_under_autocast() -> None:
    t = torch.tensor([0, 17, 999])
    emb = timestep_embedding(t, 8)
    freqs = torch.tensor([math.exp(-math.log(10000) * i / 4) for i in range(4)])
    args = t.float()[:, None] * freqs
    torch.testing.assert_close(emb, torch.cat([args.cos(), args.sin()], dim=1))
    assert timestep_embedding(t, 7).shape == (3, 7)  # odd dims are zero-padded
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = timestep_embedding(t, 8)
    assert inside.dtype == torch.float32
    torch.testing.assert_close(inside, emb, rtol=0, atol=0)


def _einsum_attention(qkv: torch.Tensor, heads: int, new_order: bool) -> torch.Tensor:
    """guided-diffusion's formulation: q, k scaled by ch**-0.25 each, softmax in float32, einsum."""
    b, width, length = qkv.shape
    ch = width // (3 * heads)
    if new_order:
        q, k, v = (z.reshape(b * heads, ch, length) for z in qkv.chunk(3, dim=1))
    else:
        q, k, v = qkv.reshape(b * heads, 3 * ch, length).split(ch, dim=1)
    scale = 1 / math.sqrt(math.sqrt(ch))
    weight = torch.einsum("bct,bcs->bts", q * scale, k * scale).float().softmax(dim=-1)
    return torch.einsum("bts,bcs->bct", weight, v).reshape(b, -1, length)


@pytest.mark.parametrize("new_order", [False, True])
def test_sdpa_attention_matches_einsum_reference(new_order: bool) -> None:
    heads, ch, length = 3, 8, 20
    qkv = torch.randn(2, 3 * heads * ch, length, generator=torch.Generator().manual_seed(0))
    attn = QKVAttention(heads) if new_order else QKVAttentionLegacy(heads)
    torch.testing.assert_close(attn(qkv), _einsum_attention(qkv, heads, new_order), rtol=1e-5, atol=1e-5)


# --- flags -------------------------------------------------------------------------------------------------


def test_flags_are_normalised_and_stored() -> None:
    model = UNet.from_flags({"image_size": 64, "num_channels": 32, "attention_resolutions": [16, 8]})
    assert model.flags == normalise_flags(model.flags)  # idempotent: a saved copy rebuilds the same net
    assert set(model.flags) == set(FLAG_DEFAULTS)
    assert model.flags["channel_mult"] == "1,2,3,4"  # "" resolved from image_size
    assert model.flags["attention_resolutions"] == "16,8"
    assert model.attention_resolutions == (4, 8)
    assert model.flags["num_res_blocks"] == 2 and model.out_channels == 3  # guided-diffusion defaults
    rebuilt = UNet.from_flags(model.flags)
    assert rebuilt.state_dict().keys() == model.state_dict().keys()


def test_flag_value_formats() -> None:
    assert normalise_flags({"image_size": 512})["channel_mult"] == "0.5,1,1,2,2,4,4"
    assert normalise_flags({"image_size": 128})["channel_mult"] == "1,1,2,3,4"
    assert normalise_flags({"channel_mult": (1, 2)})["channel_mult"] == "1,2"
    assert normalise_flags({"learn_sigma": "True", "num_heads": "2"})["learn_sigma"] is True
    with pytest.raises(ValueError, match="image_size 48"):
        normalise_flags({"image_size": 48})
    with pytest.raises(ValueError, match="num_heads"):
        normalise_flags({"num_heads": 2.5})
    with pytest.raises(ValueError, match="use_scale_shift_norm"):
        normalise_flags({"use_scale_shift_norm": "maybe"})


def test_unknown_flag_is_named() -> None:
    with pytest.raises(ValueError, match="num_chanels"):
        UNet.from_flags({**TINY, "num_chanels": 64})


def test_class_labels_required_exactly_when_class_cond() -> None:
    model = UNet.from_flags({**TINY, "class_cond": True}).eval()
    assert model.label_emb.weight.shape == (1000, 128)
    x, t = _inputs(model)
    with torch.no_grad():
        assert model(x, t, torch.tensor([3, 999])).shape == (2, 3, 32, 32)
    with pytest.raises(ValueError, match="required"):
        model(x, t)
    with pytest.raises(ValueError, match="not class-conditional"):
        UNet.from_flags(TINY)(x, t, torch.tensor([0, 1]))


def test_bad_input_size_is_explained() -> None:
    model = UNet.from_flags(TINY)
    with pytest.raises(ValueError, match="divisible by 2"):
        model(torch.zeros(1, 3, 31, 31), torch.tensor([1]))
    with pytest.raises(ValueError, match="timesteps"):
        model(torch.zeros(2, 3, 32, 32), torch.tensor([1, 2, 3]))


# --- variants ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "flags, expect_keys, absent_keys, out_channels",
    [
        (
            {"resblock_updown": True},
            ["input_blocks.2.0.in_layers.0.weight", "output_blocks.1.1.in_layers.0.weight"],
            ["input_blocks.2.0.op.weight", "output_blocks.1.1.conv.weight"],
            3,
        ),
        (
            {"resblock_updown": False},
            ["input_blocks.2.0.op.weight", "output_blocks.1.1.conv.weight", "output_blocks.3.2.conv.weight"],
            ["input_blocks.2.0.in_layers.0.weight"],
            3,
        ),
        ({"use_scale_shift_norm": False, "learn_sigma": True}, ["out.2.weight"], [], 6),
        (
            {"use_new_attention_order": True},
            ["input_blocks.3.1.qkv.weight", "middle_block.1.proj_out.weight"],
            [],
            3,
        ),
        ({"num_head_channels": -1, "num_heads": 2}, ["middle_block.1.norm.weight"], [], 3),
        ({"class_cond": True}, ["label_emb.weight"], [], 3),
    ],
)
def test_variants_build_and_run(flags: dict, expect_keys: list, absent_keys: list, out_channels: int) -> None:
    # 32 px, mult 1,2,2, one res block per level: input_blocks 2 and 4 downsample, attention (resolution 16,
    # ds 2) in input_blocks.3 and output_blocks.2/3; output_blocks.1 and .3 end with the upsampler.
    model = UNet.from_flags({**TINY, "channel_mult": "1,2,2", **flags})
    keys = model.state_dict().keys()
    for key in expect_keys:
        assert key in keys
    for key in absent_keys:
        assert key not in keys
    _randomise(model).eval()
    x, t = _inputs(model)
    y = torch.tensor([1, 2]) if model.num_classes else None
    with torch.no_grad():
        out = model(x, t, y)
    assert out.shape == (2, out_channels, 32, 32) and torch.isfinite(out).all()


def test_scale_shift_emb_layer_width() -> None:
    on = UNet.from_flags({**TINY, "use_scale_shift_norm": True}).state_dict()
    off = UNet.from_flags({**TINY, "use_scale_shift_norm": False}).state_dict()
    assert on["input_blocks.1.0.emb_layers.1.weight"].shape == (64, 128)
    assert off["input_blocks.1.0.emb_layers.1.weight"].shape == (32, 128)


def test_num_heads_resolution() -> None:
    by_channels = UNet.from_flags({**TINY, "num_head_channels": 16})
    by_count = UNet.from_flags({**TINY, "num_head_channels": -1, "num_heads": 2, "num_heads_upsample": 4})
    assert by_channels.middle_block[1].num_heads == 64 // 16
    assert by_count.middle_block[1].num_heads == 2
    assert by_count.output_blocks[0][1].num_heads == 4  # num_heads_upsample on the way up


def test_new_and_legacy_order_differ_only_in_qkv_layout() -> None:
    """Permuting the qkv rows from legacy to new layout must give the same network output."""
    legacy = _randomise(UNet.from_flags({**TINY, "use_new_attention_order": False})).eval()
    new = UNet.from_flags({**TINY, "use_new_attention_order": True}).eval()
    sd = legacy.state_dict()
    for name, tensor in list(sd.items()):
        if ".qkv." in name:
            block = legacy.get_submodule(name.rsplit(".qkv.", 1)[0])
            heads, ch = block.num_heads, block.channels // block.num_heads
            # legacy rows: (heads, 3, ch) ; new rows: (3, heads, ch)
            sd[name] = tensor.reshape(heads, 3, ch, *tensor.shape[1:]).transpose(0, 1).reshape(tensor.shape)
    new.load_state_dict(sd)
    x, t = _inputs(legacy)
    with torch.no_grad():
        torch.testing.assert_close(new(x, t), legacy(x, t), rtol=1e-5, atol=1e-5)


# --- memory format, checkpointing, precision --------------------------------------------------------------


def test_channels_last_matches_contiguous(tiny_fixture: dict, tiny_model: UNet) -> None:
    x, t = tiny_fixture["x"], tiny_fixture["t"]
    with torch.no_grad():
        ref = tiny_model(x, t)
        cl_model = UNet.from_flags(tiny_fixture["flags"]).to(memory_format=torch.channels_last)
        cl_model.load_state_dict(tiny_fixture["state_dict"])
        out = cl_model.eval()(x.to(memory_format=torch.channels_last), t)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_activation_checkpointing_gives_same_gradients() -> None:
    flags = {**TINY, "channel_mult": "1,2,2", "resblock_updown": True}
    plain = _randomise(UNet.from_flags(flags)).train()
    ckpt = UNet.from_flags({**flags, "use_checkpoint": True}).train()
    ckpt.load_state_dict(plain.state_dict())
    x, t = _inputs(plain)
    grads = []
    for model in (plain, ckpt):
        model.zero_grad()
        model(x, t).square().mean().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-5, atol=1e-6, msg=name)


def test_bf16_autocast_keeps_time_embedding_fp32(tiny_fixture: dict, tiny_model: UNet) -> None:
    seen = {}
    hook = tiny_model.time_embed[0].register_forward_pre_hook(lambda m, args: seen.update(emb=args[0]))
    x, t = tiny_fixture["x"], tiny_fixture["t"]
    try:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            out = tiny_model(x, t)
    finally:
        hook.remove()
    assert seen["emb"].dtype == torch.float32
    torch.testing.assert_close(seen["emb"], timestep_embedding(t, tiny_model.model_channels), rtol=0, atol=0)
    assert out.dtype == torch.float32  # returned in the input's dtype
    ref = tiny_fixture["out"]
    assert (out - ref).abs().max().item() < 0.05 * ref.abs().max().item()


def test_bf16_weights_run() -> None:
    model = _randomise(UNet.from_flags(TINY)).eval().to(torch.bfloat16)
    x, t = _inputs(model)
    with torch.no_grad():
        out = model(x.to(torch.bfloat16), t)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()


def test_width_not_divisible_by_groupnorm_groups_is_explained() -> None:
    with pytest.raises(ValueError, match=r"num_channels=48 .* multiple of 32"):
        UNet.from_flags({"image_size": 32, "num_channels": 48, "channel_mult": "1,2"})
