"""Enhancer GAN training (the SPARNetHD recipe): glue between generator, discriminator, losses and optimisers.

Manual optimisation, one discriminator step then one generator step per batch, so `trainer.global_step`
advances by 2 per batch (`ITERATION_STEPS`). The EMA of the generator is the `EMA` callback
(attr="generator"); validation and the export use it. The frozen VGG19 of the perceptual loss and the
optional on-the-fly DR2 (`pair_maker`) are kept outside the module tree: checkpoints hold G, D and
their optimisers only. Training draws no random numbers: every random choice is in the data
(`datasets.enhancer_data`), positioned by the step, so resuming reproduces the uninterrupted run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from lightning_dr2 import losses
from lightning_dr2.modules.averaged import ema_or_live
from lightning_dr2.modules.guards import ENHANCER_HINT, NonFiniteGuard, check_finite_weights, guarded_step
from lightning_dr2.nets.discriminator import MultiScaleDiscriminator
from lightning_dr2.nets.loading import load_into, read_state_dict
from lightning_dr2.nets.restorers import build_restorer

ITERATION_STEPS = 2  # optimizer steps per batch: D, then G

PairMaker = Callable[[Mapping[str, Any]], dict[str, Any]]


class EnhancerModule(pl.LightningModule):
    def __init__(
        self,
        generator: Mapping[str, Any],
        discriminator: Mapping[str, Any],
        loss: Mapping[str, float],
        optim: Mapping[str, Any],
        init_weights: str | None = None,
        vgg_weights: str | None = None,
        pair_maker: PairMaker | None = None,
        max_bad_steps: int = 20,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["pair_maker"])
        self.automatic_optimization = False
        self.generator = build_restorer(generator["name"], generator.get("options", {}))
        if init_weights:
            load_into(self.generator, read_state_dict(init_weights), init_weights)
        self.discriminator = MultiScaleDiscriminator(**discriminator)
        # A NaN/Inf step is skipped and counted (see modules.guards), with one guard per network so that
        # good D steps do not hide a G that is NaN every time; the EMA callback reads the G guard.
        self.nonfinite_guard = NonFiniteGuard(max_bad_steps, ENHANCER_HINT)
        self.d_nonfinite_guard = NonFiniteGuard(max_bad_steps, ENHANCER_HINT)
        self.weights = losses.LossWeights(**loss)
        perceptual = losses.load_perceptual(vgg_weights) if self.weights.vgg > 0 else None
        object.__setattr__(self, "perceptual", perceptual)  # frozen: not saved, not in the module tree
        self.pair_maker = pair_maker

    @property
    def iteration(self) -> int:
        """Batches trained so far (each is one D and one G step)."""
        return self.trainer.global_step // ITERATION_STEPS

    def frozen_to_device(self) -> None:
        """Move the frozen VGG19 (outside the module tree, so `.to()` misses it) to the module's device."""
        perceptual: losses.PerceptualLoss | None = self.perceptual  # type: ignore[assignment]
        if perceptual is not None:
            perceptual.to(self.device)

    def on_fit_start(self) -> None:
        self.frozen_to_device()

    def on_validation_start(self) -> None:
        self.frozen_to_device()

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if self.pair_maker is not None and "y" not in batch:
            return self.pair_maker(batch)
        return batch

    # -- losses (also used directly by tests) -------------------------------------------------------
    def discriminator_losses(self, y: Tensor, x: Tensor) -> dict[str, Tensor]:
        with torch.no_grad():
            fake = self.generator(y)
        d_real, d_fake = losses.hinge_d_losses(self.discriminator(x), self.discriminator(fake.detach()))
        return {"d_real": d_real, "d_fake": d_fake, "d_loss": d_real + d_fake}

    def generator_losses(self, y: Tensor, x: Tensor) -> dict[str, Tensor]:
        w = self.weights
        fake = self.generator(y)
        terms = {"g_l1": losses.l1_loss(fake, x)}
        if w.fm > 0 or w.gan > 0:
            fake_scales = self.discriminator(fake)
            if w.gan > 0:
                terms["g_gan"] = losses.hinge_g_loss(fake_scales)
            if w.fm > 0:
                with torch.no_grad():
                    real_scales = self.discriminator(x)
                terms["g_fm"] = losses.feature_matching(fake_scales, real_scales)
        if w.vgg > 0:
            terms["g_vgg"] = self.perceptual(fake, x)  # type: ignore[misc]
        if w.ssim > 0:
            terms["g_ssim"] = losses.ssim_loss(fake, x)
        weight = {"g_l1": w.l1, "g_gan": w.gan, "g_fm": w.fm, "g_vgg": w.vgg, "g_ssim": w.ssim}
        terms["g_loss"] = sum(weight[k] * v for k, v in terms.items())
        return terms

    # -- training -----------------------------------------------------------------------------------
    def _step(self, optimizer: Any, loss: Tensor, net: nn.Module, guard: NonFiniteGuard) -> None:
        optimizer.zero_grad(set_to_none=True)

        def backward() -> Tensor:
            self.manual_backward(loss)
            return loss

        guarded_step(guard, optimizer, backward, net.parameters(), self.trainer.global_step)
        if guard.last_step_skipped:
            self._idle_step(optimizer)

    @staticmethod
    def _idle_step(optimizer: Any) -> None:
        """An optimizer step without gradients. Lightning counts a manual-optimisation step per
        optimizer.step() call; a skipped or idle step still takes one (Adam leaves the weights and state of
        gradient-less parameters untouched), so global_step stays ITERATION_STEPS per batch: the D/G
        pairing, `iteration` and the data position a resume starts from stay aligned."""
        optimizer.zero_grad(set_to_none=True)
        optimizer.step()

    @property
    def adversarial(self) -> bool:
        """Whether the generator's loss reads the discriminator; without a GAN or feature-matching term
        (an L1-only recipe) D is not trained: its forward and backward passes would be wasted compute."""
        return self.weights.gan > 0 or self.weights.fm > 0

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        opt_g, opt_d = self.optimizers()
        y, x = batch["y"], batch["x"]
        d: dict[str, Tensor] = {}
        if self.adversarial:
            self.toggle_optimizer(opt_d)
            d = self.discriminator_losses(y, x)
            self._step(opt_d, d["d_loss"], self.discriminator, self.d_nonfinite_guard)
            self.untoggle_optimizer(opt_d)
        else:
            self._idle_step(opt_d)
        self.toggle_optimizer(opt_g)
        g = self.generator_losses(y, x)
        self._step(opt_g, g["g_loss"], self.generator, self.nonfinite_guard)
        self.untoggle_optimizer(opt_g)
        for key, value in {**d, **g}.items():
            self.log(f"train/{key}", value.detach(), prog_bar=key in ("g_l1", "d_loss"), batch_size=x.shape[0])
        skipped = self.nonfinite_guard.skipped + self.d_nonfinite_guard.skipped
        self.log("train/skipped_steps", float(skipped), batch_size=x.shape[0])

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        for name, net in (("generator", self.generator), ("discriminator", self.discriminator)):
            check_finite_weights(net.state_dict(), f"checkpoint at step {self.global_step} ({name})", ENHANCER_HINT)
        checkpoint["nonfinite_guard"] = self.nonfinite_guard.state_dict()
        checkpoint["d_nonfinite_guard"] = self.d_nonfinite_guard.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.nonfinite_guard.load_state_dict(checkpoint.get("nonfinite_guard", {}))
        self.d_nonfinite_guard.load_state_dict(checkpoint.get("d_nonfinite_guard", {}))

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        o = self.hparams.optim
        betas = tuple(o["betas"])
        return [
            torch.optim.Adam(self.generator.parameters(), lr=o["lr_g"], betas=betas),
            torch.optim.Adam(self.discriminator.parameters(), lr=o["lr_d"], betas=betas),
        ]

    # -- validation: EMA generator on fixed pairs (callbacks.enhancer_grid draws them) -------------
    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> dict[str, Tensor]:
        net = ema_or_live(self.trainer, self, "generator")
        out = net(batch["y"]).float().clamp(-1, 1)
        self.log("val/l1", losses.l1_loss(out, batch["x"]), sync_dist=True, batch_size=out.shape[0])
        return {"out": out}
