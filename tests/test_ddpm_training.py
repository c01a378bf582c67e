"""DDPM training end to end on tiny synthetic data: runs, learns, resumes exactly, exports."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from conftest import TINY_DDPM_NET

from lightning_dr2.config.recipes import load_config
from lightning_dr2.datasets.synthetic import generate_faces
from lightning_dr2.jobs.export import export_checkpoint
from lightning_dr2.jobs.train_ddpm import build_datamodule, build_module, train_ddpm
from lightning_dr2.nets.loading import load_into, read_state_dict
from lightning_dr2.nets.unet import UNet


@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("faces")
    generate_faces(root, n=20, size=16, seed=3)
    return root


def tiny_overrides(faces: Path, runs: Path, run: str, *extra: str) -> list[str]:
    return [
        *TINY_DDPM_NET,
        f"data.root={faces}",
        "data.synthetic=false",
        "data.batch_size=4",
        "data.val_max=4",
        "data.num_workers=0",
        f"runs_dir={runs}",
        f"run={run}",
        "wandb.mode=disabled",
        "trainer.progress_bar=false",
        "trainer.val_check_interval=1000000",
        "trainer.limit_val_batches=0",
        "sampling.num_samples=4",
        "sampling.steps=5",
        "checkpoint.every_n_steps=1000",
        *extra,
    ]


def tiny_cfg(faces: Path, runs: Path, run: str, *extra: str):
    return load_config("ddpm_tiny", tiny_overrides(faces, runs, run, *extra))


def test_fast_dev_run(faces: Path, tmp_path: Path) -> None:
    cfg = tiny_cfg(faces, tmp_path, "dev")
    module = build_module(cfg)
    trainer = pl.Trainer(fast_dev_run=True, accelerator="cpu", logger=False, enable_progress_bar=False)
    trainer.fit(module, datamodule=build_datamodule(cfg))
    assert trainer.state.finished


def test_short_run_learns_and_writes_outputs(faces: Path, tmp_path: Path) -> None:
    cfg = tiny_cfg(
        faces,
        tmp_path,
        "learn",
        "trainer.max_steps=40",
        "optim.lr=2e-3",
        "optim.warmup_steps=1",
        "trainer.log_every_n_steps=1",
    )
    module = build_module(cfg)
    dm = build_datamodule(cfg)
    dm.setup("fit")
    batch = torch.stack([dm.train_set[i]["image"] for i in range(8)])

    def fixed_loss(m) -> float:
        gen = torch.Generator().manual_seed(0)
        t = torch.randint(0, 1000, (8,), generator=gen)
        noise = torch.randn(batch.shape, generator=gen)
        with torch.no_grad():
            return m.diffusion.training_losses(m.net, batch, t, noise=noise)["mse"].mean().item()

    before = fixed_loss(module)
    result = train_ddpm(cfg)
    after = fixed_loss(result.module)
    assert after < 0.7 * before, (before, after)
    assert result.sample_grid is not None and result.sample_grid.is_file()
    assert result.loss_curve is not None and result.loss_curve.is_file()
    assert (result.run_dir / "config.yaml").is_file()
    assert (result.run_dir / "checkpoints" / "last.ckpt").is_file()
    assert "train/loss_q0" in (result.run_dir / "csv" / "metrics.csv").read_text().splitlines()[0]


def _state(result) -> tuple[dict, dict]:
    ema = next(cb for cb in result.trainer.callbacks if type(cb).__name__ == "EMA")
    return result.module.net.state_dict(), ema.module.state_dict()


def _assert_same_training_state(a, b) -> None:
    assert a.trainer.global_step == b.trainer.global_step
    net_a, ema_a = _state(a)
    net_b, ema_b = _state(b)
    for key in net_a:
        torch.testing.assert_close(net_b[key], net_a[key], rtol=0, atol=1e-6, msg=f"net {key}")
    for key in ema_a:
        torch.testing.assert_close(ema_b[key], ema_a[key], rtol=0, atol=1e-6, msg=f"ema {key}")


def test_resume_equals_uninterrupted(faces: Path, tmp_path: Path) -> None:
    """N steps, stop, resume to N+M == N+M uninterrupted: weights, EMA, optimizer, data order, step count."""
    common = ("optim.lr=1e-3", "optim.warmup_steps=3", "ema.decay=0.9", "checkpoint.every_n_steps=3")
    # 16 training images / batch 4 = 4 steps per pass over the data: 7 steps cross an epoch boundary.
    full = train_ddpm(tiny_cfg(faces, tmp_path, "full", "trainer.max_steps=7", *common))
    assert full.trainer.global_step == 7
    # A run stopped after 4 steps, continued with resume=true to 7.
    train_ddpm(tiny_cfg(faces, tmp_path, "split", "trainer.max_steps=4", *common))
    resumed = train_ddpm(tiny_cfg(faces, tmp_path, "split", "trainer.max_steps=7", "resume=true", *common))
    _assert_same_training_state(full, resumed)
    # A preempted run: resume from the periodic checkpoint at step 3 of the uninterrupted run.
    step3 = full.run_dir / "checkpoints" / "step0000003.ckpt"
    assert step3.is_file()
    preempted = train_ddpm(tiny_cfg(faces, tmp_path, "preempted", "trainer.max_steps=7", f"resume={step3}", *common))
    _assert_same_training_state(full, preempted)


def test_resume_true_without_checkpoint_is_an_error(faces: Path, tmp_path: Path) -> None:
    from lightning_dr2.config.loader import ConfigError

    with pytest.raises(ConfigError, match="resume=true but .* holds no readable checkpoint"):
        train_ddpm(tiny_cfg(faces, tmp_path, "missing", "resume=true"))


def test_export_loads_strictly_into_unet_from_flags(faces: Path, tmp_path: Path) -> None:
    result = train_ddpm(tiny_cfg(faces, tmp_path, "export", "trainer.max_steps=2"))
    sidecar = json.loads(result.export_path.with_suffix(".json").read_text())
    assert set(sidecar) == {"net", "diffusion"}
    assert sidecar["diffusion"] == result.module.diffusion_config.to_dict()
    assert sidecar["diffusion"]["learn_sigma"] is True  # resolved from net.learn_sigma
    net = load_into(UNet.from_flags(sidecar["net"]), read_state_dict(result.export_path), result.export_path)
    ema = next(cb for cb in result.trainer.callbacks if type(cb).__name__ == "EMA")
    for key, value in ema.module.state_dict().items():
        torch.testing.assert_close(net.state_dict()[key], value)
    # The CLI export of a checkpoint gives the same EMA weights.
    again = export_checkpoint(result.run_dir / "checkpoints" / "last.ckpt", tmp_path / "again.pt")
    exported = read_state_dict(again)
    for key, value in ema.module.state_dict().items():
        torch.testing.assert_close(exported[key], value)
    assert json.loads(again.with_suffix(".json").read_text()) == sidecar


def test_exploding_lr_stops_with_a_clear_error_and_exports_nothing(faces: Path, tmp_path: Path, capsys) -> None:
    """optim.lr=1e30 used to end with rc 0 and an all-NaN export; now the NaN steps are skipped and training stops."""
    from lightning_dr2.cli import main

    overrides = tiny_overrides(
        faces, tmp_path, "nan", "optim.lr=1e30", "trainer.max_steps=20", "trainer.max_bad_steps=3"
    )
    assert main(["train", "ddpm_tiny", *overrides]) == 1
    err = capsys.readouterr().err
    assert "training stopped at step" in err and "trainer.max_bad_steps=3" in err and "optim.lr" in err
    assert "Traceback" not in err
    assert not (tmp_path / "ddpm_tiny" / "nan" / "export").exists()


class _Snapshots(pl.Callback):
    """Net weights, optimizer state and EMA weights before and after every training batch."""

    def __init__(self, ema) -> None:
        self.ema, self.before, self.after = ema, {}, {}

    def _take(self, trainer, module) -> dict:
        return copy.deepcopy(
            {
                "net": module.net.state_dict(),
                "opt": trainer.optimizers[0].state_dict(),
                "ema": self.ema.module.state_dict(),
            }
        )

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self.before[batch_idx] = self._take(trainer, module)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.after[batch_idx] = self._take(trainer, module)


def _assert_tensors_equal(a, b, what: str) -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys(), what
        for key in a:
            _assert_tensors_equal(a[key], b[key], f"{what}.{key}")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), what


def test_a_single_nan_step_is_skipped_and_changes_nothing(faces: Path, tmp_path: Path) -> None:
    from lightning_dr2.callbacks.ema import EMA

    cfg = tiny_cfg(faces, tmp_path, "one_nan", "trainer.max_steps=4", "optim.warmup_steps=1")
    module = build_module(cfg)
    losses = module._losses

    def poisoned(x, gen):
        out, t = losses(x, gen)
        if module.global_step == 2:
            out = {k: v * float("nan") for k, v in out.items()}
        return out, t

    module._losses = poisoned
    ema = EMA(decay=0.9)
    snaps = _Snapshots(ema)
    trainer = pl.Trainer(
        max_steps=4,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        limit_val_batches=0,
        callbacks=[ema, snaps],
        use_distributed_sampler=False,
    )
    trainer.fit(module, datamodule=build_datamodule(cfg))
    assert trainer.global_step == 4 and module.nonfinite_guard.skipped == 1
    _assert_tensors_equal(snaps.after[2], snaps.before[2], "skipped step")
    assert ema.num_updates == 3
    for step in (1, 3):  # the steps around it do train
        before, after = snaps.before[step]["net"], snaps.after[step]["net"]
        assert any(not torch.equal(after[k], before[k]) for k in before), step
    assert all(bool(torch.isfinite(v).all()) for v in module.net.state_dict().values())


def test_nan_weights_are_never_checkpointed_or_exported(faces: Path, tmp_path: Path) -> None:
    from lightning_dr2.jobs.train_ddpm import export_unet
    from lightning_dr2.modules.guards import NonFiniteTrainingError

    cfg = tiny_cfg(faces, tmp_path, "nan_weights")
    module = build_module(cfg)
    with torch.no_grad():
        next(module.net.parameters()).fill_(float("nan"))
    with pytest.raises(NonFiniteTrainingError, match="checkpoint at step 0"):
        module.on_save_checkpoint({})
    out = tmp_path / "export" / "unet.pt"
    with pytest.raises(NonFiniteTrainingError, match="refusing"):
        export_unet(module.net, module.hparams.net, module.diffusion_config, out)
    assert not out.exists() and not out.with_suffix(".json").exists()


def test_export_of_a_plain_state_dict_says_how_to_use_it(tmp_path: Path, capsys) -> None:
    from lightning_dr2.cli import main

    state = tmp_path / "weights.pt"
    torch.save({"w": torch.zeros(2)}, state)
    assert main(["export", str(state), "--out", str(tmp_path / "x.pt")]) == 2
    err = capsys.readouterr().err
    assert "not a Lightning training checkpoint" in err and f"unet_weights={state}" in err and "sidecar" in err
    assert "Traceback" not in err and not (tmp_path / "x.pt").exists()


def test_a_mistyped_data_root_is_an_error_not_synthetic_data(tmp_path: Path, capsys) -> None:
    from lightning_dr2.cli import main

    typo = tmp_path / "ffhq_tpyo"
    assert main(["train", "ddpm_tiny", *tiny_overrides(typo, tmp_path, "typo")]) == 2
    err = capsys.readouterr().err
    assert f"data.root={typo} does not exist" in err and "data.synthetic=true" in err and "Traceback" not in err
    assert not typo.exists()
