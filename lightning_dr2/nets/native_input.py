"""The one input check of restoration networks that work at a single native size (nets/restorers.py contract)."""

from __future__ import annotations

from torch import Tensor


def check_native_input(network: str, x: Tensor, size: int) -> None:
    """(B, 3, size, size) or an error saying what came and what to do."""
    if x.ndim != 4 or x.shape[1] != 3 or tuple(x.shape[-2:]) != (size, size):
        raise ValueError(
            f"{network} expects images of shape (B, 3, {size}, {size}) in [-1, 1], got {tuple(x.shape)}; "
            f"resize the input to {size}x{size} first"
        )
