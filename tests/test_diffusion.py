"""Diffusion math: schedules, respacing, forward/posterior closed forms, sampling, losses, fixture parity."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import load_fixture
from torch import nn

from lightning_dr2.diffusion import (
    PUBLISHED_DIFFUSION,
    DiffusionConfig,
    GaussianDiffusion,
    beta_schedule,
    build_diffusion,
    discretized_gaussian_log_likelihood,
    normal_kl,
    respace_betas,
    space_timesteps,
)
from lightning_dr2.diffusion.sampling import sample_images


def process(respacing=None, *, learn_sigma: bool = True, **config) -> GaussianDiffusion:
    """A process through the one builder (learned sigma unless told otherwise)."""
    return build_diffusion(DiffusionConfig(learn_sigma=learn_sigma, **config), respacing)


class TwoHeads(nn.Module):
    """A tiny learned-sigma network whose mean and variance channels have separate parameters."""

    def __init__(self, channels: int = 3) -> None:
        super().__init__()
        self.mean = nn.Conv2d(channels, channels, 3, padding=1)
        self.var = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.mean(x), torch.tanh(self.var(x))], dim=1)


def oracle(base: GaussianDiffusion, x0: torch.Tensor, predict: str = "eps", learn_sigma: bool = True):
    """A network that knows x0: returns the exact target for the ORIGINAL step it is called with."""

    def model(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        acp = torch.from_numpy(base.alphas_cumprod)[t].float().view(-1, 1, 1, 1)
        eps = (x_t - acp.sqrt() * x0) / (1 - acp).sqrt()
        out = {"eps": eps, "x0": x0.expand_as(x_t), "v": acp.sqrt() * eps - (1 - acp).sqrt() * x0}[predict]
        return torch.cat([out, torch.zeros_like(out)], dim=1) if learn_sigma else out

    return model


@pytest.fixture
def x0() -> torch.Tensor:
    return torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 1.8 - 0.9


# ------------------------------------------------------------------ schedules


def test_linear_schedule_scales_with_steps() -> None:
    betas = beta_schedule("linear", 1000)
    assert betas.dtype == np.float64 and betas.shape == (1000,)
    assert betas[0] == pytest.approx(1e-4) and betas[-1] == pytest.approx(0.02)
    short = beta_schedule("linear", 100)
    assert short[0] == pytest.approx(1e-3) and short[-1] == pytest.approx(0.2)


def test_cosine_schedule_follows_alpha_bar() -> None:
    steps = 50
    betas = beta_schedule("cosine", steps)
    assert betas.dtype == np.float64 and betas.shape == (steps,)
    assert np.all(np.diff(betas) > 0) and betas.max() == pytest.approx(0.999)
    assert np.all((betas > 0) & (betas <= 0.999))

    def alpha_bar(t):
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    acp = np.cumprod(1 - betas)
    expected = np.array([alpha_bar((i + 1) / steps) / alpha_bar(0) for i in range(steps)])
    np.testing.assert_allclose(acp[:-1], expected[:-1], rtol=1e-10)  # the last beta is clipped


def test_bad_schedules_raise() -> None:
    with pytest.raises(ValueError, match="linear, cosine"):
        beta_schedule("quadratic", 10)
    with pytest.raises(ValueError, match="more than 20 steps"):
        beta_schedule("linear", 20)


# ------------------------------------------------------------------ respacing


def test_space_timesteps_single_section() -> None:
    kept = sorted(space_timesteps(1000, [100]))
    assert len(kept) == 100 and kept[0] == 0 and kept[-1] == 999
    assert kept[:8] == [0, 10, 20, 30, 40, 50, 61, 71]  # guided-diffusion's rounding of the 9.99 stride
    assert space_timesteps(1000, "100") == space_timesteps(1000, 100) == set(kept)


def test_space_timesteps_ddim_and_sections() -> None:
    assert space_timesteps(1000, "ddim25") == set(range(0, 1000, 40))
    assert space_timesteps(1000, "ddim1000") == set(range(1000))
    kept = space_timesteps(300, "10,15,20")
    assert space_timesteps(300, [10, 15, 20]) == kept
    for start, count in [(0, 10), (100, 15), (200, 20)]:
        section = sorted(s for s in kept if start <= s < start + 100)
        assert len(section) == count and section[0] == start and section[-1] == start + 99


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("ddim999", "cannot create exactly 999 steps"),
        ("ddimx", "ddimN"),
        ([1001], "cannot take 1001 steps"),
        ("10,abc", "comma-separated"),
        ([0], "not all zero"),
        ([5, -1], ">= 0"),
    ],
)
def test_impossible_respacing_raises(spec, message) -> None:
    with pytest.raises(ValueError, match=message):
        space_timesteps(1000, spec)


def test_respaced_process_equals_base_at_kept_steps(x0) -> None:
    base = process(steps=1000)
    spaced = process(steps=1000, respacing="ddim25")
    assert spaced.num_timesteps == 25 and spaced.timestep_map == list(range(0, 1000, 40))
    np.testing.assert_allclose(spaced.alphas_cumprod, base.alphas_cumprod[spaced.timestep_map], rtol=1e-12)

    noise = torch.randn_like(x0)
    t = torch.tensor([3, 24])
    assert spaced.model_timesteps(t).tolist() == [120, 960]
    torch.testing.assert_close(
        spaced.q_sample(x0, t, noise), base.q_sample(x0, spaced.model_timesteps(t), noise), rtol=0, atol=1e-6
    )


def test_respace_betas_rejects_out_of_range_steps() -> None:
    with pytest.raises(ValueError, match=r"\[0, 100\)"):
        respace_betas(beta_schedule("linear", 100), [0, 100])


# ------------------------------------------------------------------ forward process and posterior


def test_q_sample_closed_form(x0) -> None:
    diffusion = process(steps=100)
    noise = torch.randn_like(x0)
    t = torch.tensor([0, 57])
    acp = torch.from_numpy(diffusion.alphas_cumprod)[t].view(-1, 1, 1, 1)
    expected = (acp.sqrt() * x0.double() + (1 - acp).sqrt() * noise.double()).float()
    torch.testing.assert_close(diffusion.q_sample(x0, t, noise), expected, rtol=0, atol=1e-6)
    mean, variance, log_variance = diffusion.q_mean_variance(x0, t)
    torch.testing.assert_close(variance, (1 - acp).float().expand_as(x0))
    torch.testing.assert_close(log_variance, (1 - acp).log().float().expand_as(x0))


def test_posterior_matches_gaussian_product(x0) -> None:
    """q(x_{t-1} | x_t, x_0) ∝ q(x_t | x_{t-1}) q(x_{t-1} | x_0): compare against that product in float64."""
    diffusion = process(steps=50, learn_sigma=False)
    x0 = x0.double()
    t = torch.tensor([1, 33])
    x_t = diffusion.q_sample(x0, t, torch.randn_like(x0))
    mean, variance, log_variance = diffusion.q_posterior_mean_variance(x0, x_t, t)

    beta = torch.from_numpy(diffusion.betas)[t].view(-1, 1, 1, 1)
    acp_prev = torch.from_numpy(diffusion.alphas_cumprod)[t - 1].view(-1, 1, 1, 1)
    precision = 1 / (1 - acp_prev) + (1 - beta) / beta
    expected_mean = (acp_prev.sqrt() * x0 / (1 - acp_prev) + (1 - beta).sqrt() * x_t / beta) / precision
    torch.testing.assert_close(mean, expected_mean)
    torch.testing.assert_close(variance, (1 / precision).expand_as(x0))
    beta_tilde = torch.from_numpy(diffusion.posterior_variance)[t].view(-1, 1, 1, 1)
    torch.testing.assert_close(variance, beta_tilde.expand_as(x0))
    torch.testing.assert_close(log_variance, variance.log())


@pytest.mark.parametrize("predict", ["eps", "x0", "v"])
def test_p_mean_variance_with_oracle_recovers_x0(x0, predict) -> None:
    diffusion = process(steps=100, predict=predict)
    t = torch.tensor([5, 80])
    x_t = diffusion.q_sample(x0, t, torch.randn_like(x0))
    out = diffusion.p_mean_variance(oracle(diffusion, x0, predict), x_t, t)
    torch.testing.assert_close(out["pred_xstart"], x0, rtol=0, atol=1e-4)
    posterior_mean, _, _ = diffusion.q_posterior_mean_variance(x0, x_t, t)
    torch.testing.assert_close(out["mean"], posterior_mean, rtol=0, atol=1e-4)
    # learned_range output 0 is the midpoint of log beta~_t and log beta_t.
    mid = (diffusion.posterior_log_variance_clipped + diffusion.log_betas)[t.numpy()] / 2
    torch.testing.assert_close(
        out["log_variance"], torch.from_numpy(mid).float().view(-1, 1, 1, 1).expand_as(x0)
    )


# ------------------------------------------------------------------ sampling


def test_p_sample_noise_is_injectable(x0) -> None:
    diffusion = process(steps=1000, respacing="20")
    model = TwoHeads().eval()
    t = torch.tensor([7, 0])
    zero = diffusion.p_sample(model, x0, t, noise=torch.zeros_like(x0))
    torch.testing.assert_close(zero["sample"], zero["mean"])
    again = diffusion.p_sample(model, x0, t, noise=torch.zeros_like(x0))
    torch.testing.assert_close(again["sample"], zero["sample"], rtol=0, atol=0)
    noisy = diffusion.p_sample(model, x0, t, noise=torch.ones_like(x0))
    assert not torch.equal(noisy["sample"][0], zero["sample"][0])
    torch.testing.assert_close(noisy["sample"][1], zero["sample"][1], rtol=0, atol=0)  # no noise at t == 0
    a = diffusion.p_sample(model, x0, t, generator=torch.Generator().manual_seed(3))
    b = diffusion.p_sample(model, x0, t, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a["sample"], b["sample"], rtol=0, atol=0)


class CountCalls:
    """Wraps a model and counts its calls (one per sampling step)."""

    def __init__(self, model) -> None:
        self.model, self.calls = model, 0

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.model(x, t)


def test_ddim_eta0_is_deterministic_and_exact_with_oracle(x0) -> None:
    base = process(steps=1000)
    spaced = process("ddim25", steps=1000)
    model = CountCalls(oracle(base, x0))  # conditioned on the original step: wrong mapping would break exactness
    out = sample_images(model, spaced, seeds=[1, 2], image_size=8, method="ddim")
    assert model.calls == 25
    again = sample_images(model, spaced, seeds=[1, 2], image_size=8, method="ddim")
    torch.testing.assert_close(out, again, rtol=0, atol=0)
    torch.testing.assert_close(out, x0, rtol=0, atol=1e-4)


def test_ddpm_sampling_is_reproducible_per_image_and_exact_with_oracle(x0) -> None:
    diffusion = process("5", steps=100)
    model = CountCalls(TwoHeads().eval())
    a = sample_images(model, diffusion, seeds=[0, 1], image_size=8, method="ddpm")
    assert model.calls == 5 and a.shape == x0.shape and torch.isfinite(a).all()
    alone = sample_images(model, diffusion, seeds=[1], image_size=8, method="ddpm")
    torch.testing.assert_close(alone[0], a[1], rtol=1e-5, atol=1e-5)  # per-image seeds: batch-independent
    other = sample_images(model, diffusion, seeds=[2, 3], image_size=8, method="ddpm")
    assert not torch.allclose(other, a)
    exact = sample_images(oracle(process(steps=100), x0), diffusion, seeds=[0, 1], image_size=8, method="ddpm")
    torch.testing.assert_close(exact, x0, rtol=0, atol=1e-4)  # the net is called with the original steps


def test_sampling_method_is_checked() -> None:
    with pytest.raises(ValueError, match="'ddim' or 'ddpm'"):
        sample_images(TwoHeads(), process("4"), seeds=[0], image_size=8, method="euler")


# ------------------------------------------------------------------ training losses


def test_hybrid_loss_trains_variance_only_through_vb(x0) -> None:
    diffusion = process(steps=100)
    model = TwoHeads()
    t = torch.tensor([0, 60])
    terms = diffusion.training_losses(model, x0, t, generator=torch.Generator().manual_seed(0))
    assert set(terms) == {"loss", "mse", "vb"}
    for value in terms.values():
        assert value.shape == (2,) and value.dtype == torch.float32 and torch.isfinite(value).all()
    torch.testing.assert_close(terms["loss"], terms["mse"] + terms["vb"])

    terms["vb"].sum().backward(retain_graph=True)
    assert model.mean.weight.grad is None or model.mean.weight.grad.abs().max() == 0
    assert model.var.weight.grad.abs().max() > 0
    model.zero_grad(set_to_none=True)
    terms["mse"].sum().backward()
    assert model.var.weight.grad is None or model.var.weight.grad.abs().max() == 0
    assert model.mean.weight.grad.abs().max() > 0


@pytest.mark.parametrize("steps", [1000, 100])
def test_vb_at_t0_is_rescaled_decoder_nll(x0, steps) -> None:
    """vb at t == 0 is the decoder NLL in bits/dim, times num_timesteps / 1000 (as RESCALED_MSE)."""
    diffusion = process(steps=steps)
    model = TwoHeads()
    t = torch.zeros(2, dtype=torch.long)
    noise = torch.randn_like(x0)
    with torch.no_grad():
        terms = diffusion.training_losses(model, x0, t, noise=noise)
        x_t = diffusion.q_sample(x0, t, noise)
        out = diffusion.p_mean_variance(model, x_t, t, clip_denoised=False)
    nll = -discretized_gaussian_log_likelihood(x0, out["mean"], 0.5 * out["log_variance"]).mean(dim=(1, 2, 3))
    torch.testing.assert_close(terms["vb"], nll / math.log(2.0) * steps / 1000)


def test_losses_stay_fp32_with_bf16_model(x0) -> None:
    diffusion = process(steps=100)
    model = TwoHeads()
    terms = diffusion.training_losses(lambda x, t: model(x, t).bfloat16(), x0, torch.tensor([1, 9]))
    assert all(v.dtype == torch.float32 for v in terms.values())


def test_fixed_variance_mse_loss(x0) -> None:
    diffusion = process(steps=100, learn_sigma=False)
    terms = diffusion.training_losses(lambda x, t: x, x0, diffusion.sample_timesteps(2, "cpu"))
    assert set(terms) == {"loss", "mse"}
    torch.testing.assert_close(terms["loss"], terms["mse"])


def test_sample_timesteps_uniform_and_seeded() -> None:
    diffusion = process(respacing="10")
    t = diffusion.sample_timesteps(1000, "cpu", generator=torch.Generator().manual_seed(0))
    assert t.dtype == torch.long and t.min() == 0 and t.max() == 9
    torch.testing.assert_close(t, diffusion.sample_timesteps(1000, "cpu", torch.Generator().manual_seed(0)))


def test_likelihood_helpers() -> None:
    means = torch.tensor([-0.3, 0.0, 0.95])
    assert normal_kl(means, 0.1, means, 0.1).abs().max() == 0
    assert (normal_kl(means, 0.0, means + 0.5, 0.3) > 0).all()
    bins = torch.linspace(-1, 1, 256).view(-1, 1).expand(256, 3)
    log_p = discretized_gaussian_log_likelihood(bins, means.expand(256, 3), torch.full((256, 3), -2.0))
    torch.testing.assert_close(log_p.exp().sum(dim=0), torch.ones(3), rtol=0, atol=1e-4)


# ------------------------------------------------------------------ bad configurations


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"model_var_type": "learned_range", "loss_type": "mse"}, "needs loss_type='hybrid'"),
        ({"model_var_type": "fixed_small", "loss_type": "hybrid"}, "trains a learned variance"),
        ({"model_mean_type": "previous_x"}, "valid: eps, x0, v"),
    ],
)
def test_bad_configuration_raises(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        GaussianDiffusion(beta_schedule("linear", 100), **kwargs)


def test_wrong_model_channels_raise(x0) -> None:
    diffusion = process(steps=100)  # learned sigma: expects 6 channels
    with pytest.raises(ValueError, match="expects 6 channels"):
        diffusion.p_mean_variance(lambda x, t: x, x0, torch.tensor([1, 2]))


# ------------------------------------------------------------------ reference fixture


def test_dr2_remover_fixture_p_mean_variance() -> None:
    fixture = load_fixture("dr2_remover_tiny.pt")
    try:
        from lightning_dr2.nets.unet import UNet
    except ImportError as err:
        pytest.skip(f"lightning_dr2.nets.unet not available: {err}")
    config = fixture["diffusion"]
    diffusion = process(
        steps=config["steps"],
        schedule=config["schedule"],
        respacing=[fixture["respacing"]],
        predict=config["predict"],
    )
    assert diffusion.model_var_type == config["variance"]
    assert diffusion.timestep_map == list(fixture["timestep_map"])

    model = UNet.from_flags(fixture["flags"])
    model.load_state_dict(fixture["state_dict"])
    model.eval()
    x_t = fixture["x_t"]
    for entry in fixture["p_mean_variance"]:
        t = torch.full((x_t.shape[0],), entry["t_respaced"], dtype=torch.long)
        assert diffusion.model_timesteps(t).tolist() == [entry["t_model"]] * x_t.shape[0]
        with torch.no_grad():
            out = diffusion.p_mean_variance(model, x_t, t, clip_denoised=config["clip_denoised"])
        for key in ("mean", "variance", "log_variance", "pred_xstart"):
            torch.testing.assert_close(
                out[key],
                entry[key],
                rtol=0,
                atol=1e-4,
                msg=lambda m, k=key, s=entry["t_respaced"]: f"{k} at t={s}: {m}",
            )


# ------------------------------------------------------------------ DiffusionConfig and the builder


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"schedule": "quadratic"}, r"diffusion.schedule='quadratic' is not one of: linear, cosine"),
        ({"predict": "previous_x"}, r"diffusion.predict='previous_x' is not one of: eps, x0, v"),
        ({"loss": "l1"}, r"diffusion.loss='l1'"),
        ({"steps": 1}, r"diffusion.steps must be an integer >= 2, got 1"),
        ({"steps": 20}, r"diffusion.steps=20 is too short for diffusion.schedule='linear'"),
        ({"learn_sigma": True, "loss": "mse"}, r"diffusion.loss='mse' with a learned sigma"),
        ({"learn_sigma": False, "loss": "hybrid"}, r"diffusion.loss='hybrid' trains a learned variance"),
        ({"stepz": 10}, r"unknown diffusion keys \['stepz'\]"),
    ],
)
def test_diffusion_config_errors_name_the_field(values, message) -> None:
    with pytest.raises(ValueError, match=message):
        DiffusionConfig.from_dict(values)


def test_diffusion_config_round_trips_and_builds() -> None:
    config = DiffusionConfig(steps=40, schedule="cosine", predict="x0", learn_sigma=False)
    assert DiffusionConfig.from_dict(config.to_dict()) == config
    assert config.loss_type == "mse"
    diffusion = build_diffusion(config, respacing="10")
    assert diffusion.num_timesteps == 10 and diffusion.model_mean_type == "x0"
    assert diffusion.model_var_type == "fixed_large" and diffusion.loss_type == "mse"
    kept = diffusion.timestep_map
    np.testing.assert_allclose(diffusion.alphas_cumprod, np.cumprod(1 - beta_schedule("cosine", 40))[kept])
    learned = build_diffusion(PUBLISHED_DIFFUSION)
    assert learned.num_timesteps == 1000 and learned.model_var_type == "learned_range"
    assert learned.loss_type == "hybrid" and learned.model_mean_type == "eps"
    np.testing.assert_array_equal(learned.betas, beta_schedule("linear", 1000))


def test_learn_sigma_follows_the_network() -> None:
    follow = DiffusionConfig()
    assert follow.for_network(False).learn_sigma is False and follow.for_network(True).learn_sigma is True
    with pytest.raises(ValueError, match="not resolved"):
        build_diffusion(follow)
    with pytest.raises(ValueError, match=r"diffusion.learn_sigma=True disagrees with the network \(net.learn_sigma"):
        DiffusionConfig(learn_sigma=True).for_network(False)
