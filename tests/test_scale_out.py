"""Scale-out on CPU with 2 processes (gloo, ddp_spawn): what docs/scale-out.md promises for multi-GPU runs.

Here: training ranks draw different noise and timesteps. Elsewhere (not repeated): each restored image is
written once on 2 processes (test_restore.test_restore_same_result_on_two_processes); eval metrics on 2
processes equal 1 process within the numerical contract (test_evaluation.test_eval_metrics_equal_on_two_processes).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from conftest import TINY_DDPM_NET, quiet_cpu_trainer
from omegaconf import OmegaConf
from torch.utils.data import Dataset

from lightning_dr2.config.recipes import load_config
from lightning_dr2.modules.ddpm import DDPMModule


class SameImages(Dataset):
    """Every rank gets the same images: any difference between the ranks' draws comes from their seeds."""

    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"image": torch.zeros(3, 16, 16)}


class DrawRecorder(DDPMModule):
    """The DDPM module, recording the timesteps and noise each training step draws (per rank, to a file:
    under ddp_spawn the module that trained lives in another process)."""

    def __init__(self, out: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.out = out
        self.draws: list[dict[str, Any]] = []

    def on_train_start(self) -> None:
        losses = self.diffusion.training_losses

        def recording(model: Any, x: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> Any:
            self.draws.append({"step": self.global_step, "t": t.tolist(), "noise": noise.flatten()[:16].tolist()})
            return losses(model, x, t, noise=noise)

        self.diffusion.training_losses = recording

    def on_train_end(self) -> None:
        Path(self.out, f"draws.rank{self.global_rank}.json").write_text(json.dumps(self.draws))


def test_training_ranks_draw_different_noise(tmp_path: Path) -> None:
    cfg = OmegaConf.to_container(load_config("ddpm_tiny", TINY_DDPM_NET), resolve=True)
    module = DrawRecorder(str(tmp_path), net=cfg["net"], diffusion=cfg["diffusion"], optim=cfg["optim"], seed=5)
    trainer = quiet_cpu_trainer(
        devices=2,
        strategy="ddp_spawn",
        max_steps=2,
    )
    loader = torch.utils.data.DataLoader(SameImages(), batch_size=2)
    trainer.fit(module, train_dataloaders=loader)
    ranks = [json.loads((tmp_path / f"draws.rank{r}.json").read_text()) for r in (0, 1)]
    assert [d["step"] for d in ranks[0]] == [d["step"] for d in ranks[1]] == [0, 1]
    for a, b in zip(*ranks, strict=True):
        assert a["noise"] != b["noise"], f"step {a['step']}: both ranks drew the same noise"
        assert a["t"] != b["t"], f"step {a['step']}: both ranks drew the same timesteps"
    assert ranks[0][0]["noise"] != ranks[0][1]["noise"]  # and each step draws afresh
