"""The numerical contract of the suite, in one place (quoted by docs/reproducibility.md).

Results computed with a different batch composition, process count, CPU instruction set or GPU agree only
to fp32 rounding: CPU kernels block and vectorise by batch shape and ISA, so the same image can round
differently. Every such comparison in the tests uses these bounds, never bitwise equality. Bitwise
comparisons are kept only for the same machine, the same batch shapes and the same call sequence.
"""

from __future__ import annotations

import numpy as np
import torch

# Float outputs in [-1, 1] (DR2 x0_hat, restored images before quantisation, Phi_N) and float64 sums of
# fp32 features: max abs difference allowed across batch sizes / processes / ISAs. A DR2 loop followed by an
# enhancer is a chain of ~30 networks: a 64 px SPARNet after DR2 moved by 1.4e-5 between AVX-512 and AVX2
# kernels. 1e-4 (also the reference fixtures' tolerance) is 1/80 of a uint8 level.
FP32_ATOL = 1e-4
# Relative part of the bound, for quantities larger than 1 (feature sums, covariances, FID statistics).
FP32_RTOL = 1e-5
# uint8 images (PNG outputs): a pixel value may move by at most this many levels ...
UINT8_MAX_LEVEL_DIFF = 1
# ... and at most this fraction of all values may move at all (rounding a value near .5 flips it).
UINT8_MAX_CHANGED_FRACTION = 0.01


def assert_fp32_close(actual, expected, msg: str = "") -> None:
    """Equal to fp32 rounding (the contract's bound) for tensors or arrays of any float dtype."""
    torch.testing.assert_close(
        torch.as_tensor(actual).double(),
        torch.as_tensor(expected).double(),
        rtol=FP32_RTOL,
        atol=FP32_ATOL,
        msg=lambda detail: f"{msg} {detail}".strip(),
    )


def assert_uint8_close(actual: np.ndarray, expected: np.ndarray, msg: str = "") -> None:
    """Equal up to the contract's one-level rounding flips of a few values."""
    a = np.asarray(actual).astype(np.int16)
    b = np.asarray(expected).astype(np.int16)
    assert a.shape == b.shape, f"{msg} shapes differ: {a.shape} vs {b.shape}"
    diff = np.abs(a - b)
    changed = float((diff > 0).mean())
    assert diff.max() <= UINT8_MAX_LEVEL_DIFF, f"{msg} max level difference {diff.max()} > {UINT8_MAX_LEVEL_DIFF}"
    assert changed <= UINT8_MAX_CHANGED_FRACTION, (
        f"{msg} {changed:.2%} of the values differ (allowed {UINT8_MAX_CHANGED_FRACTION:.0%})"
    )
