"""Non-finite guards: NaN/Inf steps are skipped (weights, optimizer state and EMA untouched), counted, and stop
training after `trainer.max_bad_steps` in a row; NaN weights are never checkpointed or exported."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from lightning_dr2.callbacks.ema import EMA
from lightning_dr2.modules.guards import (
    NonFiniteGuard,
    NonFiniteTrainingError,
    check_finite_weights,
    guarded_step,
    step_was_skipped,
)


def _net_and_optimizer() -> tuple[nn.Linear, torch.optim.AdamW]:
    torch.manual_seed(0)
    net = nn.Linear(4, 2)
    return net, torch.optim.AdamW(net.parameters(), lr=0.1, weight_decay=0.1)


def _closure(net: nn.Linear, optimizer: torch.optim.Optimizer, scale: float):
    def run() -> torch.Tensor:
        optimizer.zero_grad()
        loss = net(torch.ones(3, 4)).pow(2).mean() * scale
        loss.backward()
        return loss.detach()

    return run


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_non_finite_step_leaves_weights_and_optimizer_state_unchanged(bad: float) -> None:
    net, opt = _net_and_optimizer()
    guard = NonFiniteGuard(max_bad_steps=5)
    guarded_step(guard, opt, _closure(net, opt, 1.0), net.parameters(), step=0)  # a good step: state exists
    weights, state = copy.deepcopy(net.state_dict()), copy.deepcopy(opt.state_dict())
    guarded_step(guard, opt, _closure(net, opt, bad), net.parameters(), step=1)
    for key, value in weights.items():
        assert torch.equal(net.state_dict()[key], value), key
    for index, per_param in state["state"].items():
        for key, value in per_param.items():
            assert torch.equal(opt.state_dict()["state"][index][key], value), (index, key)
    assert guard.skipped == 1 and guard.last_step_skipped
    guarded_step(guard, opt, _closure(net, opt, 1.0), net.parameters(), step=2)
    assert not guard.last_step_skipped and guard.in_a_row == 0 and guard.skipped == 1
    assert not torch.equal(net.weight, weights["weight"])


def test_too_many_bad_steps_in_a_row_stop_with_the_step_and_what_to_try() -> None:
    net, opt = _net_and_optimizer()
    guard = NonFiniteGuard(max_bad_steps=3)
    for step in range(2):
        guarded_step(guard, opt, _closure(net, opt, float("nan")), net.parameters(), step=step)
    with pytest.raises(NonFiniteTrainingError, match=r"step 7.*3 steps in a row.*trainer\.max_bad_steps=3.*optim\.lr"):
        guarded_step(guard, opt, _closure(net, opt, float("nan")), net.parameters(), step=7)


def test_ema_does_not_average_a_skipped_step() -> None:
    module = nn.Module()
    module.net = nn.Linear(2, 2)
    module.nonfinite_guard = NonFiniteGuard(max_bad_steps=5)
    ema = EMA(decay=0.5, warmup=False)
    ema.setup(None, module, "fit")  # type: ignore[arg-type]
    with torch.no_grad():
        module.net.weight.add_(1.0)
    module.nonfinite_guard.last_step_skipped = True
    assert step_was_skipped(module)
    before = copy.deepcopy(ema.module.state_dict())
    ema.on_train_batch_end(SimpleNamespace(global_step=1), module)  # type: ignore[arg-type]
    assert ema.num_updates == 0 and torch.equal(ema.module.weight, before["weight"])
    module.nonfinite_guard.last_step_skipped = False
    ema.on_train_batch_end(SimpleNamespace(global_step=2), module)  # type: ignore[arg-type]
    assert ema.num_updates == 1 and not torch.equal(ema.module.weight, before["weight"])


def test_non_finite_weights_are_refused_by_name() -> None:
    state = {"a": torch.ones(2), "b": torch.tensor([1.0, float("nan")]), "steps": torch.tensor([3])}
    with pytest.raises(NonFiniteTrainingError, match=r"export to x\.pt: 1 of 3 .*\(b\).*optim\.lr"):
        check_finite_weights(state, "export to x.pt")
    check_finite_weights({"a": torch.ones(2)}, "fine")
