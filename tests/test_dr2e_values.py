"""DR2E computes DR2, then the enhancer on its resize: values, not only shapes.

The DR2 stage is checked against the official-loop fixture (zero noise), the enhancer stage against the
pieces called by hand (bicubic resize to the enhancer size, clamp, tiny SPARNet with seeded random weights).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_SPARNET_CONFIG, tiny_sparnet
from contract import assert_fp32_close

from lightning_dr2.dr2.pipeline import DR2E

ENHANCER_CONFIG = {**TINY_SPARNET_CONFIG, "size": 128, "min_feat_size": 32}  # 64 px DR2 -> 128 px enhancer


@pytest.fixture(scope="module")
def pipe_and_enhancer(dr2_remover_tiny: dict, tmp_path_factory) -> tuple[DR2E, torch.nn.Module]:
    root = tmp_path_factory.mktemp("dr2e")
    torch.save(dr2_remover_tiny["state_dict"], root / "unet.pt")
    (root / "unet.json").write_text(json.dumps(dr2_remover_tiny["flags"]))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        from lightning_dr2.nets.sparnet import SPARNet

        enhancer = SPARNet(**ENHANCER_CONFIG).train()
        with torch.no_grad():
            for _ in range(3):  # run the spectral-norm power iteration, as training would
                enhancer(torch.rand(1, 3, 128, 128) * 2 - 1)
    enhancer.eval()
    torch.save(enhancer.state_dict(), root / "enhancer.pth")
    pipe = DR2E.from_weights(
        Path(root / "unet.pt"),
        enhancer="sparnethd",
        enhancer_weights=str(root / "enhancer.pth"),
        enhancer_options=ENHANCER_CONFIG,
        respacing=dr2_remover_tiny["respacing"],
    )
    return pipe, enhancer


def _cheapest_cases(dr2_remover_tiny: dict) -> list[dict]:
    return sorted(dr2_remover_tiny["cases"], key=lambda c: c["omega"] - c["tau"])[:2]


def test_restore_equals_official_dr2_then_the_enhancer_on_its_resize(dr2_remover_tiny: dict, pipe_and_enhancer) -> None:
    pipe, enhancer = pipe_and_enhancer
    assert pipe.enhancer_size == 128
    for case in _cheapest_cases(dr2_remover_tiny):
        pipe.N, pipe.tau, pipe.omega = case["N"], case["tau"], case["omega"]
        out = pipe.restore_tensors(dr2_remover_tiny["y"], noise=torch.zeros_like)
        err = (out["dr2"] - case["out"]).abs().max().item()
        assert err <= 1e-4, f"DR2 stage, case {case['N'], case['tau'], case['omega']}: max abs err {err}"
        up = F.interpolate(out["dr2"], size=(128, 128), mode="bicubic", align_corners=False).clamp(-1, 1)
        with torch.no_grad():
            by_hand = enhancer(up).clamp(-1, 1)
        assert out["output"].shape == (1, 3, 128, 128)
        assert_fp32_close(out["output"], by_hand, msg="enhancer stage")
        assert (by_hand - up).abs().mean() > 1e-2  # the enhancer really changed the image


def test_tiny_sparnet_helper_is_seeded() -> None:
    a, b = tiny_sparnet(seed=5), tiny_sparnet(seed=5)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), name
