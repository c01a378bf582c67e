"""DDPM pretraining: glue between the ADM UNet, the Gaussian diffusion math, the optimiser and logging.

The network knows nothing about diffusion and the diffusion knows nothing about Lightning; this module
only wires them. EMA, sample grids and checkpoints are callbacks (see `lightning_dr2.callbacks`); NaN/Inf
steps are skipped and counted by the guard in `modules.guards`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

from lightning_dr2.diffusion import DiffusionConfig, build_diffusion
from lightning_dr2.modules.guards import NonFiniteGuard, check_finite_weights, guarded_step
from lightning_dr2.nets.unet import UNet


def step_seed(*keys: int) -> int:
    """A 63-bit seed derived from integer keys (seed, rank, step, micro-batch).

    Training noise and timesteps are drawn from a generator re-seeded from (seed, rank, step), so a
    resumed run draws exactly what the uninterrupted run would have, with no RNG state to checkpoint,
    and every rank draws different noise.
    """
    return int(
        np.random.SeedSequence([int(k) for k in keys]).generate_state(2, dtype=np.uint32).view(np.uint64)[0] >> 1
    )


class DDPMModule(pl.LightningModule):
    """Trains an ADM UNet with the (improved-)DDPM objective."""

    def __init__(
        self,
        net: dict[str, Any],
        diffusion: dict[str, Any],
        optim: dict[str, Any],
        seed: int = 0,
        channels_last: bool = False,
        compile: bool = False,
        max_bad_steps: int = 20,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = UNet.from_flags(net)
        # The one process of this run: sample grids, the evaluator and the export all take it from here.
        self.diffusion_config = DiffusionConfig.from_dict(diffusion).for_network(self.net.flags["learn_sigma"])
        self.diffusion = build_diffusion(self.diffusion_config)
        self.seed = seed
        self.channels_last = channels_last
        self.compile = compile
        self._compiled: Any = None  # torch.compile wrapper, kept out of the module tree (state-dict keys stay plain)
        self.nonfinite_guard = NonFiniteGuard(max_bad_steps)

    # -- model ---------------------------------------------------------------------------------------
    def configure_model(self) -> None:
        if self.channels_last:
            self.net.to(memory_format=torch.channels_last)
        if self.compile and self._compiled is None:
            object.__setattr__(self, "_compiled", torch.compile(self.net))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        net = self._compiled if self._compiled is not None else self.net
        return net(x, t)

    # -- training ------------------------------------------------------------------------------------
    def _generator(self, *keys: int) -> torch.Generator:
        gen = torch.Generator(device=self.device)
        gen.manual_seed(step_seed(self.seed, *keys))
        return gen

    def _losses(self, x: torch.Tensor, gen: torch.Generator) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        n = x.shape[0]
        t = self.diffusion.sample_timesteps(n, self.device, generator=gen)
        noise = torch.randn(x.shape, device=self.device, dtype=x.dtype, generator=gen)
        return self.diffusion.training_losses(self, x, t, noise=noise), t

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        x = batch["image"]
        micro = batch_idx % max(1, self.trainer.accumulate_grad_batches)
        gen = self._generator(self.global_rank, self.global_step, micro)
        losses, t = self._losses(x, gen)
        loss = losses["loss"].mean()
        self.log("train/loss", loss, prog_bar=True)
        for key in ("mse", "vb"):
            if key in losses:
                self.log(f"train/{key}", losses[key].mean())
        self._log_quartiles("train", losses["loss"], t)
        return loss

    def _log_quartiles(self, stage: str, per_example: torch.Tensor, t: torch.Tensor) -> None:
        """Loss per timestep quartile: where in the chain the model is still learning."""
        quartile = (t * 4 // self.diffusion.num_timesteps).clamp(max=3)
        for q in range(4):
            mask = quartile == q
            if mask.any():
                self.log(f"{stage}/loss_q{q}", per_example[mask].mean(), sync_dist=stage != "train")

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        # Fixed per-image seeds: the validation loss does not depend on batch size or GPU count.
        x = batch["image"]
        totals = []
        for i, index in enumerate(batch["index"].tolist()):
            gen = self._generator(10**9 + int(index))
            losses, _ = self._losses(x[i : i + 1], gen)
            totals.append(losses["loss"])
        loss = torch.cat(totals)
        self.log("val/loss", loss.mean(), prog_bar=True, sync_dist=True, batch_size=x.shape[0])

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Any = None) -> None:
        """Skip (and count) a step whose loss or gradients are NaN/Inf; see `modules.guards`."""
        guarded_step(self.nonfinite_guard, optimizer, optimizer_closure, self.net.parameters(), self.global_step)
        self.log("train/skipped_steps", float(self.nonfinite_guard.skipped))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        check_finite_weights(self.net.state_dict(), f"checkpoint at step {self.global_step}")
        checkpoint["nonfinite_guard"] = self.nonfinite_guard.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.nonfinite_guard.load_state_dict(checkpoint.get("nonfinite_guard", {}))

    def configure_optimizers(self) -> dict[str, Any]:
        cfg = self.hparams.optim
        opt = torch.optim.AdamW(
            self.net.parameters(),
            lr=cfg["lr"],
            weight_decay=cfg.get("weight_decay", 0.0),
            betas=tuple(cfg.get("betas", (0.9, 0.999))),
        )
        warmup = int(cfg.get("warmup_steps", 0))
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
