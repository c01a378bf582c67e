"""Non-finite guards for training: skip NaN/Inf steps, stop after too many in a row, never save NaN weights.

Shared by every LightningModule that trains a network (the DDPM, the enhancer). A module owns one
`NonFiniteGuard`, runs its optimizer steps through `guarded_step`, and checks its weights with
`check_finite_weights` before a checkpoint is written; the EMA callback asks `step_was_skipped` so a
skipped step is not averaged either.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn


class NonFiniteTrainingError(RuntimeError):
    """Training produced NaN/Inf losses or gradients too many steps in a row (or NaN weights to save)."""


def all_finite(tensors: Iterable[Tensor | None]) -> bool:
    """True when every given tensor holds only finite values (None entries, e.g. unused grads, are ignored)."""
    flags = [torch.isfinite(t).all() for t in tensors if t is not None]
    return bool(torch.stack(flags).all()) if flags else True


def non_finite_names(state: Mapping[str, Tensor]) -> list[str]:
    """The entries of a state dict holding NaN/Inf values."""
    return [name for name, t in state.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]


def check_finite_weights(state: Mapping[str, Tensor], what: str) -> None:
    """Raise when `state` holds NaN/Inf values: such weights are never checkpointed or exported."""
    bad = non_finite_names(state)
    if bad:
        preview = ", ".join(bad[:5]) + (f", ... ({len(bad)} in all)" if len(bad) > 5 else "")
        raise NonFiniteTrainingError(
            f"{what}: {len(bad)} of {len(state)} weight tensors hold NaN/Inf values ({preview}); refusing to "
            "write them. Resume from an earlier checkpoint with a lower optim.lr (and check the data)"
        )


class NonFiniteGuard:
    """Counts optimizer steps skipped because their loss or gradients were NaN/Inf.

    `max_bad_steps` skipped steps in a row stop training with an error naming the step. The counts are
    kept in the module's checkpoint so `train/skipped_steps` continues across resumes.
    """

    def __init__(self, max_bad_steps: int) -> None:
        if max_bad_steps < 1:
            raise ValueError(f"max_bad_steps must be >= 1, got {max_bad_steps}")
        self.max_bad_steps = max_bad_steps
        self.skipped = 0
        self.in_a_row = 0
        self.last_step_skipped = False

    def admit(self, loss: Tensor | None, params: Iterable[nn.Parameter], step: int) -> bool:
        """Whether the step may update the weights; counts it (and raises after too many) when not."""
        finite = (loss is None or bool(torch.isfinite(loss).all())) and all_finite(p.grad for p in params)
        self.last_step_skipped = not finite
        if finite:
            self.in_a_row = 0
            return True
        self.skipped += 1
        self.in_a_row += 1
        if self.in_a_row >= self.max_bad_steps:
            raise NonFiniteTrainingError(
                f"training stopped at step {step}: the loss or gradients were NaN/Inf for {self.in_a_row} steps in "
                f"a row (trainer.max_bad_steps={self.max_bad_steps}; {self.skipped} skipped in all). Try a lower "
                "optim.lr (or more optim.warmup_steps, optim.grad_clip), check the training images, and resume "
                "from the last checkpoint"
            )
        return False

    def state_dict(self) -> dict[str, int]:
        return {"skipped": self.skipped, "in_a_row": self.in_a_row}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.skipped = int(state.get("skipped", 0))
        self.in_a_row = int(state.get("in_a_row", 0))


def guarded_step(
    guard: NonFiniteGuard, optimizer: Any, closure: Callable[[], Any], params: Iterable[nn.Parameter], step: int
) -> None:
    """Run `closure` (forward and backward), then `optimizer.step` only when loss and gradients are finite.

    AdamW moves weights even for zero gradients, so a bad step must skip `step()` entirely, not zero the
    gradients; the weights and optimizer state are then exactly those before the step.
    """
    loss = closure()
    if guard.admit(loss, params, step):
        optimizer.step(closure=lambda: loss)


def step_was_skipped(module: nn.Module) -> bool:
    """True when `module`'s last optimizer step was skipped by its `nonfinite_guard` (if it has one)."""
    guard = getattr(module, "nonfinite_guard", None)
    return isinstance(guard, NonFiniteGuard) and guard.last_step_skipped
