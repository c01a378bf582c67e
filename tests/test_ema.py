"""EMA arithmetic, unit by unit: the decay direction, the warm-up, one update per optimizer step."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch
from conftest import quiet_cpu_trainer
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_dr2.callbacks.ema import EMA


def _linear(value: float) -> nn.Linear:
    net = nn.Linear(2, 2)
    with torch.no_grad():
        net.weight.fill_(value)
        net.bias.fill_(value)
    return net


def _ema_of(net: nn.Module, **kwargs) -> EMA:
    ema = EMA(**kwargs)
    ema.setup(trainer=None, pl_module=SimpleNamespace(net=net), stage="fit")  # type: ignore[arg-type]
    return ema


@pytest.mark.parametrize("n", [0, 1, 2, 9, 90, 10_000, 10**7])
def test_warmup_is_min_of_decay_and_one_plus_n_over_ten_plus_n(n: int) -> None:
    assert EMA(decay=0.9999).decay_at(n) == pytest.approx(min(0.9999, (1 + n) / (10 + n)), rel=0, abs=1e-15)
    assert EMA(decay=0.9999, warmup=False).decay_at(n) == 0.9999


def test_update_keeps_decay_of_the_average_and_one_minus_decay_of_the_network() -> None:
    net = _linear(0.0)
    ema = _ema_of(net, decay=0.9, warmup=False)
    with torch.no_grad():
        net.weight.fill_(1.0)
        net.bias.fill_(-2.0)
    ema.update(net)
    torch.testing.assert_close(ema.module.weight, torch.full((2, 2), 0.1))  # 0.9 * 0 + 0.1 * 1
    torch.testing.assert_close(ema.module.bias, torch.full((2,), -0.2))
    ema.update(net)
    torch.testing.assert_close(ema.module.weight, torch.full((2, 2), 0.19))  # 0.9 * 0.1 + 0.1 * 1
    assert ema.num_updates == 2


def test_warmup_decay_is_used_per_update() -> None:
    net = _linear(0.0)
    ema = _ema_of(net, decay=0.999)
    with torch.no_grad():
        net.weight.fill_(1.0)
    ema.update(net)  # decay_at(0) = 0.1: the average moves 90% of the way
    torch.testing.assert_close(ema.module.weight, torch.full((2, 2), 0.9))
    ema.update(net)  # decay_at(1) = 2/11
    torch.testing.assert_close(ema.module.weight, torch.full((2, 2), 0.9 * 2 / 11 + 9 / 11))


def test_buffers_are_copied_not_averaged() -> None:
    net = nn.BatchNorm1d(3)
    ema = _ema_of(net, decay=0.5, warmup=False)
    net.running_mean.fill_(4.0)
    ema.update(net)
    torch.testing.assert_close(ema.module.running_mean, torch.full((3,), 4.0))


class _Regressor(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return (self.net(x) - y).square().mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.net.parameters(), lr=0.1)


def test_one_update_per_optimizer_step_under_gradient_accumulation(tmp_path) -> None:
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(16, 4), torch.randn(16, 1))
    ema = EMA(decay=0.9)
    steps_at_update: list[int] = []
    original_update = ema.update

    def recording_update(source: nn.Module) -> None:
        steps_at_update.append(trainer.global_step)
        original_update(source)

    ema.update = recording_update  # type: ignore[method-assign]
    trainer = quiet_cpu_trainer(
        max_epochs=1,
        accumulate_grad_batches=2,
        callbacks=[ema],
        devices=1,
        default_root_dir=tmp_path,
    )
    trainer.fit(_Regressor(), DataLoader(data, batch_size=2))  # 8 batches = 4 optimizer steps
    assert trainer.global_step == 4
    assert steps_at_update == [1, 2, 3, 4]
    assert ema.num_updates == 4
