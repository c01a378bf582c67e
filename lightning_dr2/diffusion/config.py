"""`DiffusionConfig`: the one description of a diffusion process, and the one builder of it.

Training, sample grids, the evaluator, `restore`, `eval` and `bench` all build their `GaussianDiffusion`
through `build_diffusion(config, respacing)`, and exported UNets carry the config in their sidecar, so
a network is always sampled with the process it was trained with.

learn_sigma is a fact about the NETWORK (6 output channels: mean and variance) before it is one about
the process, so the network's flag (`net.learn_sigma`, guided-diffusion's name) is where it is set. A
config's `learn_sigma` is None ("as the network says") until `for_network` fills it in; set
explicitly, it must agree with the network, or `for_network` raises naming both.

Jobs that sample a trained network (restore, eval, dr2-cache) take a `DiffusionRequest` instead: only the
fields the user gave, checked against the process the network's export records.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from .gaussian import MEAN_TYPES, GaussianDiffusion
from .respace import respace_betas, space_timesteps
from .schedule import SCHEDULES, beta_schedule

LOSSES = ("auto", "mse", "hybrid")


def _check_choice(name: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"diffusion.{name}={value!r} is not one of: {', '.join(choices)}")


@dataclass
class DiffusionConfig:
    """A Gaussian diffusion process (the `diffusion.*` keys of every config).

    steps: length of the training process (T). schedule: "linear" (Ho et al., scaled by 1000/steps) or
    "cosine" (Nichol & Dhariwal). predict: what the network outputs: "eps" (noise), "x0" or "v".
    learn_sigma: learned-range variance (network outputs 2*C channels) or fixed variance; None = take it
    from the network (see the module docstring). loss: "auto" (hybrid with learned sigma, else mse),
    "mse" or "hybrid" (mse + variational bound). The defaults are the published process: see
    `PUBLISHED_DIFFUSION`.
    """

    steps: int = 1000
    schedule: str = "linear"
    predict: str = "eps"
    learn_sigma: bool | None = None
    loss: str = "auto"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the field and value that cannot describe a process."""
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 2:
            raise ValueError(f"diffusion.steps must be an integer >= 2, got {self.steps!r}")
        _check_choice("schedule", self.schedule, SCHEDULES)
        _check_choice("predict", self.predict, MEAN_TYPES)
        _check_choice("loss", self.loss, LOSSES)
        if self.learn_sigma is not None and not isinstance(self.learn_sigma, bool):
            raise ValueError(f"diffusion.learn_sigma must be true, false or null, got {self.learn_sigma!r}")
        if self.schedule == "linear" and self.steps <= 20:
            raise ValueError(
                f"diffusion.steps={self.steps} is too short for diffusion.schedule='linear' (its betas scale "
                "with 1000/steps and reach 1 at 20 steps): use more steps or schedule=cosine"
            )
        if self.learn_sigma is True and self.loss == "mse":
            raise ValueError(
                "diffusion.loss='mse' with a learned sigma leaves the variance channels untrained: "
                "use loss=hybrid (or auto), or a network with learn_sigma=false"
            )
        if self.learn_sigma is False and self.loss == "hybrid":
            raise ValueError(
                "diffusion.loss='hybrid' trains a learned variance, but learn_sigma is false: use loss=mse (or auto)"
            )

    @property
    def loss_type(self) -> str:
        """The loss actually used ("auto" resolved); needs learn_sigma to be known."""
        if self.loss != "auto":
            return self.loss
        return "hybrid" if self._learn_sigma() else "mse"

    def for_network(self, net_learns_sigma: bool, source: str = "net.learn_sigma") -> DiffusionConfig:
        """This config with learn_sigma taken from the network (`source` names where that flag came from).

        An explicit learn_sigma that disagrees with the network is an error: the process would expect
        a different number of output channels than the network has.
        """
        if self.learn_sigma is not None and self.learn_sigma != bool(net_learns_sigma):
            raise ValueError(
                f"diffusion.learn_sigma={self.learn_sigma} disagrees with the network ({source}="
                f"{bool(net_learns_sigma)}), which fixes its output channels: leave diffusion.learn_sigma unset "
                "(null) to follow the network"
            )
        return replace(self, learn_sigma=bool(net_learns_sigma))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], source: str | None = None) -> DiffusionConfig:
        """From a mapping (a config section, a sidecar); missing keys take the defaults, unknown keys fail.

        `source` (e.g. a sidecar's path) prefixes the error messages.
        """
        where = f"{source}: " if source else ""
        if not isinstance(values, Mapping):
            raise ValueError(f"{where}expected a mapping of diffusion settings, got {type(values).__name__}")
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"{where}unknown diffusion keys {unknown}; valid keys: {known}")
        try:
            return cls(**dict(values))
        except ValueError as err:
            raise ValueError(f"{where}{err}") from err

    def _learn_sigma(self) -> bool:
        if self.learn_sigma is None:
            raise ValueError(
                "diffusion.learn_sigma is not resolved: call config.for_network(<the network's learn_sigma>) first"
            )
        return self.learn_sigma


@dataclass
class DiffusionRequest:
    """The `diffusion.*` keys of the jobs that SAMPLE a trained UNet (restore, eval, dr2-cache, the DR2 of
    train-enhancer): only what the user gave. None means "not given", never "the default".

    A UNet export records the process it was trained with; a given field must agree with that record (the
    loader raises naming both), a field not given follows it. Weights that record no process get the given
    fields over the published one (`DiffusionConfig()`). Training a DDPM defines a process and keeps the
    full `DiffusionConfig`. The fields are `DiffusionConfig`'s (a test keeps the two lists equal).
    """

    steps: int | None = None
    schedule: str | None = None
    predict: str | None = None
    learn_sigma: bool | None = None
    loss: str | None = None

    def given(self) -> dict[str, Any]:
        """The fields the user set, by name."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    def over(self, base: DiffusionConfig) -> DiffusionConfig:
        """`base` with the given fields replaced (validated: a process that cannot exist raises ValueError)."""
        return replace(base, **self.given())

    @classmethod
    def of(cls, config: DiffusionConfig) -> DiffusionRequest:
        """A whole `DiffusionConfig` as a request: every field given (learn_sigma None stays "as the network")."""
        return cls(**config.to_dict())

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], source: str | None = None) -> DiffusionRequest:
        """From a config section; unknown keys fail, and the given values must describe a process over the
        published defaults (`source`, e.g. the config file, prefixes the errors)."""
        where = f"{source}: " if source else ""
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"{where}unknown diffusion keys {unknown}; valid keys: {known}")
        request = cls(**dict(values))
        try:
            request.over(DiffusionConfig())
        except ValueError as err:
            raise ValueError(f"{where}{err}") from err
        return request


#: The process of the published FFHQ-256 DDPMs (DR2's DR2_FFHQ.pkl, ILVR's ffhq_10m.pt, P2-weighting's
#: lightweight ADM): linear betas over 1000 steps, eps prediction, learned-range variance (hybrid loss).
#: Weights without a sidecar, and flat flag sidecars written before exports carried the diffusion,
#: mean this process (with learn_sigma from their flags).
PUBLISHED_DIFFUSION = DiffusionConfig(steps=1000, schedule="linear", predict="eps", learn_sigma=True, loss="auto")


def build_diffusion(config: DiffusionConfig, respacing: str | int | Sequence[int] | None = None) -> GaussianDiffusion:
    """The `GaussianDiffusion` described by `config` (learn_sigma resolved), optionally respaced.

    respacing: None for all `config.steps`, else `space_timesteps` input ("ddim25", "100", [100], 100);
    the network is still called with the original steps. The variance is learned-range with
    learn_sigma, else fixed_large (beta_t), as guided-diffusion's defaults.
    """
    learn_sigma = config._learn_sigma()
    betas = beta_schedule(config.schedule, config.steps)
    timestep_map = None
    if respacing is not None and respacing != "":
        betas, timestep_map = respace_betas(betas, space_timesteps(config.steps, respacing))
    return GaussianDiffusion(
        betas,
        model_mean_type=config.predict,
        model_var_type="learned_range" if learn_sigma else "fixed_large",
        loss_type=config.loss_type,
        timestep_map=timestep_map,
    )
