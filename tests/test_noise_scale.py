"""The scale of every Gaussian draw: q_sample, p_sample, ddim_sample and the DR2 loop with NON-ZERO noise.

The expected values are computed here from the betas alone (float64 closed forms), not from the
process's own buffers, so a sampler that scales its noise wrongly (e.g. 7 * sigma**2 * noise) fails.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from lightning_dr2.diffusion import DiffusionConfig, beta_schedule, build_diffusion
from lightning_dr2.dr2 import DR2, lowpass

TOL = {"rtol": 1e-5, "atol": 1e-5}  # fp32 arithmetic against float64 closed forms


class TwoHeads(nn.Module):
    """A small learned-sigma network: a mean head and a variance head in [-1, 1]."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.mean = nn.Conv2d(3, 3, 3, padding=1)
        self.var = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        scale = (t.float() / 1000).view(-1, 1, 1, 1)  # depends on the original step
        return torch.cat([self.mean(x) + scale, torch.tanh(self.var(x))], dim=1)


def schedule(betas: np.ndarray) -> dict[str, np.ndarray]:
    """Closed forms of a process from its betas, in float64."""
    acp = np.cumprod(1.0 - betas)
    acp_prev = np.append(1.0, acp[:-1])
    posterior_var = betas * (1 - acp_prev) / (1 - acp)
    return {
        "betas": betas,
        "acp": acp,
        "acp_prev": acp_prev,
        "coef_x0": betas * np.sqrt(acp_prev) / (1 - acp),
        "coef_xt": (1 - acp_prev) * np.sqrt(1 - betas) / (1 - acp),
        "min_log": np.log(np.append(posterior_var[1], posterior_var[1:])),
        "large_log": np.log(np.append(posterior_var[1], betas[1:])),
    }


def at(values: np.ndarray, t: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(values)[t].view(-1, 1, 1, 1)


def expected_step(s: dict, output: torch.Tensor, x: torch.Tensor, t: torch.Tensor, learned: bool):
    """(pred_x0 clipped, posterior mean, log variance) of an eps-predicting network, in float64."""
    x, output = x.double(), output.double()
    eps = output[:, :3]
    pred_x0 = (x / at(s["acp"], t).sqrt() - (1 / at(s["acp"], t) - 1).sqrt() * eps).clamp(-1, 1)
    mean = at(s["coef_x0"], t) * pred_x0 + at(s["coef_xt"], t) * x
    if learned:
        frac = (output[:, 3:] + 1) / 2
        log_var = frac * at(np.log(s["betas"]), t) + (1 - frac) * at(s["min_log"], t)
    else:
        log_var = at(s["large_log"], t).expand_as(x)
    return pred_x0, mean, log_var


@pytest.fixture
def batch() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(7)
    return {
        "x": torch.randn(3, 3, 8, 8, generator=gen),
        "x0": torch.rand(3, 3, 8, 8, generator=gen) * 2 - 1,
        "noise": torch.randn(3, 3, 8, 8, generator=gen),
    }


@pytest.mark.parametrize("schedule_name", ["linear", "cosine"])
def test_q_sample_scales_noise_by_sqrt_one_minus_alpha_bar(batch, schedule_name) -> None:
    diffusion = build_diffusion(DiffusionConfig(steps=100, schedule=schedule_name, learn_sigma=True))
    s = schedule(beta_schedule(schedule_name, 100))
    t = torch.tensor([0, 37, 99])
    got = diffusion.q_sample(batch["x0"], t, noise=batch["noise"])
    want = at(s["acp"], t).sqrt() * batch["x0"].double() + (1 - at(s["acp"], t)).sqrt() * batch["noise"].double()
    torch.testing.assert_close(got.double(), want, **TOL)


@pytest.mark.parametrize("learned", [True, False])
def test_p_sample_adds_exp_half_log_variance_times_noise(batch, learned) -> None:
    diffusion = build_diffusion(DiffusionConfig(steps=100, learn_sigma=learned))
    net = TwoHeads()
    model = net if learned else (lambda x, t: net(x, t)[:, :3])
    s = schedule(beta_schedule("linear", 100))
    t = torch.tensor([1, 50, 99])
    out = diffusion.p_sample(model, batch["x"], t, noise=batch["noise"])
    with torch.no_grad():
        _, mean, log_var = expected_step(s, model(batch["x"], t), batch["x"], t, learned)
    torch.testing.assert_close(out["mean"].double(), mean, **TOL)
    torch.testing.assert_close(out["log_variance"].double(), log_var, **TOL)
    torch.testing.assert_close(out["sample"].double(), mean + torch.exp(0.5 * log_var) * batch["noise"].double(), **TOL)
    # At t == 0 the step returns the mean: no noise is added.
    last = diffusion.p_sample(model, batch["x"], torch.zeros(3, dtype=torch.long), noise=batch["noise"])
    torch.testing.assert_close(last["sample"], last["mean"], rtol=0, atol=0)


@pytest.mark.parametrize("eta", [0.5, 1.0])
def test_ddim_sample_adds_sigma_times_noise(batch, eta) -> None:
    diffusion = build_diffusion(DiffusionConfig(steps=1000, learn_sigma=True), respacing="ddim20")
    kept = diffusion.timestep_map
    s = schedule(beta_schedule("linear", 1000))
    acp = s["acp"][kept]
    acp_prev = np.append(1.0, acp[:-1])
    net = TwoHeads()
    t = torch.tensor([1, 10, 19])
    out = diffusion.ddim_sample(net, batch["x"], t, eta=eta, noise=batch["noise"])
    with torch.no_grad():
        eps = net(batch["x"], torch.tensor(kept)[t])[:, :3].double()
    x = batch["x"].double()
    a, a_prev = at(acp, t), at(acp_prev, t)
    pred_x0 = (x / a.sqrt() - (1 / a - 1).sqrt() * eps).clamp(-1, 1)
    eps_clipped = (x / a.sqrt() - pred_x0) / (1 / a - 1).sqrt()
    sigma = eta * ((1 - a_prev) / (1 - a)).sqrt() * (1 - a / a_prev).sqrt()
    want = pred_x0 * a_prev.sqrt() + (1 - a_prev - sigma**2).sqrt() * eps_clipped + sigma * batch["noise"].double()
    torch.testing.assert_close(out["sample"].double(), want, **TOL)


class NoiseList:
    """DR2's `noise` callable handing out a fixed list of draws in order (and counting them)."""

    def __init__(self, draws: list[torch.Tensor]) -> None:
        self.draws, self.used = draws, 0

    def __call__(self, like: torch.Tensor) -> torch.Tensor:
        draw = self.draws[self.used]
        assert draw.shape == like.shape
        self.used += 1
        return draw


@pytest.mark.parametrize(("sampler", "N"), [("ddpm", 2), ("ddpm", 1), ("ddim", 4)])
def test_dr2_loop_with_nonzero_noise_equals_a_loop_written_out(sampler, N) -> None:  # noqa: N803
    net = TwoHeads()
    dr2 = DR2(net, respacing=20, sampler=sampler, eta=0.7)
    y = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(3)) * 2 - 1
    tau, omega = 3, 8
    gen = torch.Generator().manual_seed(11)
    draws = [torch.randn(y.shape, generator=gen) for _ in range(2 * (omega - tau) + 2)]
    noise = NoiseList(draws)
    got = dr2(y, N, tau, omega, noise=noise)
    assert noise.used == 2 * (omega - tau) + 2  # q(omega), then p(i) and q(i-1) per step, then p(tau)

    # The loop by hand, with its own float64 closed forms on the 20-step grid of the linear 1000 process.
    kept = dr2.diffusion.timestep_map
    acp = np.cumprod(1 - beta_schedule("linear", 1000))[kept]
    s = schedule(1 - acp / np.append(1.0, acp[:-1]))
    yd = y.double()
    stream = iter(draws)

    def q(i: int) -> torch.Tensor:
        a = torch.tensor(s["acp"][i], dtype=torch.float64)
        return a.sqrt() * yd + (1 - a).sqrt() * next(stream).double()

    x = q(omega)
    for i in range(omega, tau - 1, -1):
        t = torch.full((2,), i)
        with torch.no_grad():
            output = net(x.float(), torch.tensor(kept)[t]).double()
        pred_x0, mean, log_var = expected_step(s, output, x, t, learned=True)
        step_noise = next(stream).double()
        if sampler == "ddpm":
            sample = mean + torch.exp(0.5 * log_var) * step_noise
        else:
            a, a_prev = at(s["acp"], t), at(s["acp_prev"], t)
            eps = (x / a.sqrt() - pred_x0) / (1 / a - 1).sqrt()
            sigma = 0.7 * ((1 - a_prev) / (1 - a)).sqrt() * (1 - a / a_prev).sqrt()
            sample = pred_x0 * a_prev.sqrt() + (1 - a_prev - sigma**2).sqrt() * eps + sigma * step_noise
        if i == tau:
            want = pred_x0
            break
        guide = q(i - 1)
        x = guide if N == 1 else sample - lowpass(sample, N) + lowpass(guide, N)
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(got, dr2(y, N, tau, omega, noise=lambda like: torch.zeros_like(like)), atol=1e-3)
