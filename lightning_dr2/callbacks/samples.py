"""Fixed-seed sample grids from the EMA network, saved as PNG in the run dir and logged to W&B."""

from __future__ import annotations

import logging
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import WandbLogger

from lightning_dr2.diffusion import build_diffusion
from lightning_dr2.diffusion.sampling import sample_images
from lightning_dr2.modules.averaged import ema_or_live
from lightning_dr2.report import save_grid

log = logging.getLogger(__name__)


class SampleGrid(pl.Callback):
    """Every `every_n_steps` optimizer steps (and at the end of training) sample `num_samples` images.

    Image i always starts from seed `seed + i`, so grids of different steps/runs are comparable.
    Sampling runs on rank 0 only; the EMA weights are used when an `EMA` callback is present. The
    process is the module's `diffusion_config` (the one it trains), respaced to `steps`.
    """

    def __init__(
        self,
        out_dir: str | Path,
        every_n_steps: int = 5000,
        num_samples: int = 16,
        method: str = "ddim",
        steps: int = 50,
        eta: float = 0.0,
        seed: int = 0,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.every_n_steps = every_n_steps
        self.num_samples = num_samples
        self.method = method
        self.steps = steps
        self.eta = eta
        self.seed = seed
        self.last_path: Path | None = None

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args) -> None:
        step = trainer.global_step
        if (
            self.every_n_steps > 0
            and step > 0
            and step % self.every_n_steps == 0
            and step != getattr(self, "_done", -1)
        ):
            self._done = step
            self.sample(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_step != getattr(self, "_done", -1):
            self.sample(trainer, pl_module)

    @torch.no_grad()
    def sample(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> Path | None:
        if not trainer.is_global_zero:
            return None
        net = ema_or_live(trainer, pl_module)
        respacing = f"ddim{self.steps}" if self.method == "ddim" else [self.steps]
        diffusion = build_diffusion(pl_module.diffusion_config, respacing=respacing)
        size = int(pl_module.hparams.net["image_size"])
        was_training = net.training
        net.eval()
        images = sample_images(
            net,
            diffusion,
            seeds=[self.seed + i for i in range(self.num_samples)],
            image_size=size,
            method=self.method,
            eta=self.eta,
            device=pl_module.device,
            progress=False,
        )
        net.train(was_training)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        path = self.out_dir / f"samples_step{trainer.global_step:07d}.png"
        nrow = max(1, int(round(self.num_samples**0.5)))
        save_grid(images, path, nrow=nrow)  # faces upscaled (nearest) to >= 128 px: tiny runs stay visible
        self.last_path = path
        log.info("sample grid (%s, %d steps, EMA) -> %s", self.method, self.steps, path)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image("samples/ema", [str(path)], step=trainer.global_step)
        return path
