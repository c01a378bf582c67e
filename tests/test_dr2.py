"""The DR2 sampler: official-loop fixture, omega rule, batch invariance, K samples, validation."""

from __future__ import annotations

import pytest
import torch
from contract import FP32_ATOL, assert_fp32_close

from lightning_dr2.dr2 import DR2, default_omega
from lightning_dr2.nets.unet import UNet


@pytest.fixture(scope="module")
def dr2(dr2_remover_tiny: dict) -> DR2:
    unet = UNet.from_flags(dr2_remover_tiny["flags"])
    unet.load_state_dict(dr2_remover_tiny["state_dict"])
    return DR2(unet.eval(), respacing=dr2_remover_tiny["respacing"])


def test_reproduces_every_official_case_with_zero_noise(dr2: DR2, dr2_remover_tiny: dict) -> None:
    assert len(dr2_remover_tiny["cases"]) >= 4
    for case in dr2_remover_tiny["cases"]:
        N, tau, omega = case["N"], case["tau"], case["omega"]
        assert dr2.resolve_omega(N, tau, None) == omega  # the official default rule
        out = dr2(dr2_remover_tiny["y"], N, tau, noise=torch.zeros_like)
        err = (out - case["out"]).abs().max().item()
        assert err <= 1e-4, f"N={N} tau={tau} omega={omega}: max abs err {err}"


def test_timestep_map_is_guided_diffusions(dr2: DR2, dr2_remover_tiny: dict) -> None:
    t = torch.arange(dr2.num_steps)
    assert dr2.diffusion.model_timesteps(t).tolist() == dr2_remover_tiny["timestep_map"]


@pytest.mark.parametrize(
    ("N", "tau", "omega"),
    [(1, 10, 15), (2, 10, 20), (4, 22, 42), (3, 10, 30), (8, 35, 60), (16, 35, 65), (32, 10, 40), (16, 80, 99)],
)
def test_default_omega_rule(N: int, tau: int, omega: int) -> None:
    assert default_omega(N, tau, 100) == omega


def test_unet_calls_per_image(dr2: DR2) -> None:
    calls = []
    unet = dr2.unet

    def counting(x, t):
        calls.append(x.shape[0])
        return unet(x, t)

    counted = DR2(unet, respacing=100)
    counted._model = counting  # type: ignore[method-assign]
    y = torch.zeros(2, 3, 64, 64)
    counted(y, 8, 35, noise=torch.zeros_like)
    assert len(calls) == counted.unet_calls(8, 35) == 26


@pytest.mark.cross_batch
def test_batch_invariance_with_per_image_seeds(dr2: DR2) -> None:
    """Per-image seeds make the noise exact; the values agree to the contract's fp32 bound, not bitwise."""
    gen = torch.Generator().manual_seed(0)
    y = torch.rand(3, 3, 64, 64, generator=gen) * 2 - 1
    seeds = [11, 22, 33]
    batched = dr2(y, 4, 10, 14, seeds=seeds)  # a short loop (5 UNet calls): the suite runs it under 3 ISAs
    for i in (0, 2):
        alone = dr2(y[i : i + 1], 4, 10, 14, seeds=[seeds[i]])
        assert_fp32_close(alone[0], batched[i], msg=f"image {i} alone vs in a batch of 3")
    other = dr2(y[:1], 4, 10, 14, seeds=[12])
    assert (other[0] - batched[0]).abs().max() > 1e-3  # a different seed really changes the result


@pytest.mark.cross_batch
def test_k_samples_and_std_map(dr2: DR2) -> None:
    y = torch.rand(2, 3, 64, 64) * 2 - 1
    samples, mean, std = dr2.sample_k(y, 4, 10, k=2, omega=12, seeds=[1, 2])
    assert samples.shape == (2, 2, 3, 64, 64) and mean.shape == std.shape == (2, 3, 64, 64)
    assert std.mean() > 0
    # Zero noise: the k copies are the same computation at different batch positions, equal to fp32 rounding.
    _, _, std0 = dr2.sample_k(y, 4, 10, k=2, omega=12, noise=torch.zeros_like)
    assert std0.abs().max() <= FP32_ATOL


def test_trajectory_has_one_estimate_per_step(dr2: DR2) -> None:
    y = torch.zeros(1, 3, 64, 64)
    out = dr2.run(y, 4, 10, omega=14, noise=torch.zeros_like, return_trajectory=True)
    assert len(out.trajectory) == 5
    torch.testing.assert_close(out.trajectory[-1], out.x0)


def test_ddim_variant_is_deterministic_for_eta0(dr2_remover_tiny: dict, dr2: DR2) -> None:
    ddim = DR2(dr2.unet, respacing=50, sampler="ddim", eta=0.0)
    y = torch.rand(1, 3, 64, 64) * 2 - 1
    a = ddim(y, 4, 5, seeds=[0])
    b = ddim(y, 4, 5, seeds=[0])
    torch.testing.assert_close(a, b)
    assert a.abs().max() <= 1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"tau": -1}, "tau"),
        ({"tau": 30, "omega": 30}, "greater than tau"),
        ({"tau": 30, "omega": 20}, "greater than tau"),
        ({"tau": 10, "omega": 100}, "beyond the respaced grid"),
        ({"N": 0}, "positive integer"),
        ({"N": -4}, "positive integer"),
        ({"N": 3}, "must divide"),
        ({"N": 2.5}, "positive integer"),
    ],
)
def test_bad_settings_are_explained(dr2: DR2, kwargs: dict, match: str) -> None:
    args = {"N": 4, "tau": 10, **kwargs}
    with pytest.raises(ValueError, match=match):
        dr2(torch.zeros(1, 3, 64, 64), args["N"], args["tau"], args.get("omega"), noise=torch.zeros_like)


@pytest.mark.parametrize(
    ("y", "match"),
    [
        (torch.zeros(3, 64, 64), r"\(B, 3, H, W\)"),
        (torch.zeros(1, 1, 64, 64), r"\(B, 3, H, W\)"),
        (torch.zeros(1, 3, 32, 32), "UNet works at 64x64"),
        (torch.full((1, 3, 64, 64), 255.0), r"\[-1, 1\]"),
    ],
)
def test_bad_inputs_are_explained(dr2: DR2, y: torch.Tensor, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        dr2(y, 4, 10, noise=torch.zeros_like)
