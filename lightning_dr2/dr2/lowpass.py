"""Phi_N, the low-pass filter of ILVR and DR2: downscale by N, upscale back by N.

DR2 (like ILVR) keeps the high frequencies of the denoised sample and replaces its low frequencies with
those of the diffused degraded input, using Phi_N(x) = up_N(down_N(x)) computed with ILVR's `resizer.py`
(a port of MATLAB's `imresize`): Keys cubic kernel (a = -0.5), antialiased (kernel stretched by 1/N)
when downscaling only, weights normalised to sum to 1, symmetric mirror padding at the borders (the
edge pixel is repeated, like numpy's 'symmetric' mode), separable, one axis at a time.

Performance: the resizer is linear and separable, so each axis is one matrix. Down (H/N x H) and up
(H x H/N) are fused into a single H x H matrix P = U @ D per axis, and the filter is
``P_h @ x @ P_w^T``: two small batched GEMMs (cheap on a GPU), no gathers and no Python loops over
pixels. The matrices are built once in float64 and cached per (H, W, N, device, dtype).
"""

from __future__ import annotations

import contextlib
import functools
import math
import numbers

import torch
from torch import Tensor

__all__ = ["lowpass", "lowpass_matrices", "resize_matrix"]

# Keys cubic kernel with a = -0.5 has support [-2, 2].
_CUBIC_WIDTH = 4.0


def _cubic(x: Tensor) -> Tensor:
    """Keys cubic convolution kernel, a = -0.5 (MATLAB imresize's 'cubic')."""
    ax = x.abs()
    ax2 = ax * ax
    ax3 = ax2 * ax
    inner = (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1)
    outer = (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * ((ax > 1) & (ax <= 2))
    return inner + outer


def resize_matrix(in_length: int, out_length: int, scale: float) -> Tensor:
    """The (out_length x in_length) float64 matrix of ILVR's 1-D cubic resize by `scale`.

    Mirrors the resizer's `contributions`: output pixel centres are mapped back to input coordinates,
    each takes ceil(kernel width) + 2 taps, the kernel is stretched by 1/scale when downscaling
    (antialiasing), the weights are normalised to sum to 1, and taps outside the image are reflected
    with period 2 * in_length (edge pixel repeated). Taps that reflect onto the same pixel add up.
    """
    antialias = scale < 1.0
    width = _CUBIC_WIDTH / scale if antialias else _CUBIC_WIDTH

    def kernel(arg: Tensor) -> Tensor:
        return scale * _cubic(scale * arg) if antialias else _cubic(arg)

    out_coords = torch.arange(1, out_length + 1, dtype=torch.float64)
    shifted = out_coords - (out_length - in_length * scale) / 2
    match = shifted / scale + 0.5 * (1 - 1 / scale)  # 1-based input coordinate of each output centre
    left = torch.floor(match - width / 2)
    taps = int(math.ceil(width)) + 2
    fov = left[:, None] + torch.arange(taps, dtype=torch.float64) - 1  # 0-based input indices
    weights = kernel(match[:, None] - fov - 1)
    sums = weights.sum(dim=1, keepdim=True)
    sums[sums == 0] = 1.0
    weights = weights / sums

    mirror = torch.cat([torch.arange(in_length), torch.arange(in_length - 1, -1, -1)])
    index = mirror[torch.remainder(fov.long(), 2 * in_length)]
    matrix = torch.zeros(out_length, in_length, dtype=torch.float64)
    matrix.scatter_add_(1, index, weights)
    return matrix


@functools.lru_cache(maxsize=64)
def _lowpass_matrix_1d(length: int, n: int) -> Tensor:
    """P = up_N @ down_N for one axis, float64 on the CPU (cached: a handful of sizes per run)."""
    small = length // n
    down = resize_matrix(length, small, 1.0 / n)
    up = resize_matrix(small, length, float(n))
    return up @ down


@functools.lru_cache(maxsize=64)
def lowpass_matrices(
    size_h: int, size_w: int, n: int, device: torch.device, dtype: torch.dtype
) -> tuple[Tensor, Tensor]:
    """(P_h, P_w^T) for Phi_N on images of size (size_h, size_w), cast to `device` and `dtype`."""
    p_h = _lowpass_matrix_1d(size_h, n).to(device=device, dtype=dtype)
    p_w_t = _lowpass_matrix_1d(size_w, n).t().contiguous().to(device=device, dtype=dtype)
    return p_h, p_w_t


def _check_n(n: object, size_h: int, size_w: int) -> int:
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise ValueError(f"lowpass: N must be a positive int, got N={n!r} ({type(n).__name__})")
    n = int(n)
    if n < 1:
        raise ValueError(f"lowpass: N must be a positive int, got N={n}")
    if size_h % n or size_w % n:
        raise ValueError(
            f"lowpass: N={n} must divide the image size, got {size_h}x{size_w} "
            f"({size_h}/{n} or {size_w}/{n} is not an integer)"
        )
    return n


def lowpass(x: Tensor, N: int) -> Tensor:  # noqa: N803 (the paper's name)
    """Phi_N(x) = up_N(down_N(x)) with ILVR's cubic resizer, for a batch (B, C, H, W).

    Every image and channel is filtered independently. N == 1 returns `x` itself. Half-precision
    inputs (float16, bfloat16) are filtered in float32 with autocast off and cast back: rounded to
    bfloat16 the weights no longer sum to 1 (rows off by up to ~2e-3), a bias the DR2 loop would inject
    into the low frequencies at every step, and the GEMMs are too small for float32 to cost anything.
    """
    if not isinstance(x, Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"lowpass: expected a 4-D tensor (B, C, H, W), got {shape}")
    if not x.is_floating_point():
        raise TypeError(f"lowpass: expected a floating-point tensor, got {x.dtype}")
    size_h, size_w = x.shape[-2:]
    n = _check_n(N, size_h, size_w)
    if n == 1:
        return x
    compute = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    p_h, p_w_t = lowpass_matrices(size_h, size_w, n, x.device, compute)
    with _no_autocast(x.device.type):
        out = torch.matmul(torch.matmul(p_h, x.to(compute)), p_w_t)
    return out.to(x.dtype)


def _no_autocast(device_type: str) -> contextlib.AbstractContextManager:
    """Autocast off where it is on: under bf16-mixed the GEMMs would otherwise run in bf16."""
    if torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type=device_type, enabled=False)
    return contextlib.nullcontext()
