"""Non-finite guards for training: skip NaN/Inf steps, stop after too many in a row, never save NaN weights.

Shared by every LightningModule that trains a network (the DDPM, the enhancer). A module owns one
`NonFiniteGuard`, runs its optimizer steps through `guarded_step`, and checks its weights with
`check_finite_weights` (NaN/Inf, or exploded beyond `MAX_WEIGHT_MAGNITUDE`) before a checkpoint is written;
the EMA callback asks `step_was_skipped` so a skipped step is not averaged either.
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


# Weights beyond this magnitude are a diverged run, not a trained network (trained weights are O(1); 1e6 times
# an activation already overflows bf16 sums): refused like NaN/Inf, at checkpoints and exports.
MAX_WEIGHT_MAGNITUDE = 1e6

# What to try when a DDPM run diverges (the enhancer's module passes its own keys: `ENHANCER_HINT`).
DDPM_HINT = "a lower optim.lr (or more optim.warmup_steps, optim.grad_clip)"
ENHANCER_HINT = "lower optim.lr_g and optim.lr_d"


def non_finite_names(state: Mapping[str, Tensor]) -> list[str]:
    """The entries of a state dict holding NaN/Inf values."""
    return [name for name, t in state.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]


def exploded_names(state: Mapping[str, Tensor], limit: float = MAX_WEIGHT_MAGNITUDE) -> dict[str, float]:
    """The finite floating-point entries of a state dict with values beyond `limit` in magnitude: {name: max |w|}."""
    found = {}
    for name, t in state.items():
        if t.is_floating_point() and t.numel() and bool(torch.isfinite(t).all()):
            peak = float(t.detach().abs().max())
            if peak > limit:
                found[name] = peak
    return found


def check_finite_weights(state: Mapping[str, Tensor], what: str, hint: str = DDPM_HINT) -> None:
    """Raise when `state` holds NaN/Inf values or exploded ones (beyond `MAX_WEIGHT_MAGNITUDE`): such weights
    are never checkpointed or exported."""
    bad = non_finite_names(state)
    if bad:
        preview = ", ".join(bad[:5]) + (f", ... ({len(bad)} in all)" if len(bad) > 5 else "")
        raise NonFiniteTrainingError(
            f"{what}: {len(bad)} of {len(state)} weight tensors hold NaN/Inf values ({preview}); refusing to "
            f"write them. Resume from an earlier checkpoint with {hint} (and check the data)"
        )
    exploded = exploded_names(state)
    if exploded:
        worst = sorted(exploded.items(), key=lambda item: -item[1])
        preview = ", ".join(f"{name} (|w| up to {peak:.3g})" for name, peak in worst[:3])
        raise NonFiniteTrainingError(
            f"{what}: {len(exploded)} of {len(state)} weight tensors hold values beyond {MAX_WEIGHT_MAGNITUDE:.0e} "
            f"({preview}): the training diverged; refusing to write them. Use an earlier checkpoint, or resume "
            f"from one with {hint}"
        )


class NonFiniteGuard:
    """Counts optimizer steps skipped because their loss or gradients were NaN/Inf.

    `max_bad_steps` skipped steps in a row stop training with an error naming the step. The counts are
    kept in the module's checkpoint so `train/skipped_steps` continues across resumes.
    """

    def __init__(self, max_bad_steps: int, hint: str = DDPM_HINT) -> None:
        if max_bad_steps < 1:
            raise ValueError(f"max_bad_steps must be >= 1, got {max_bad_steps}")
        self.max_bad_steps = max_bad_steps
        self.hint = hint  # what to try, in the config keys of the module that owns the guard
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
                f"a row (trainer.max_bad_steps={self.max_bad_steps}; {self.skipped} skipped in all). Try "
                f"{self.hint}, check the training images, and resume from the last checkpoint"
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
