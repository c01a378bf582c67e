"""Benchmarks with JSON output (`python -m lightning_dr2 bench <what> key=value ...`, `make bench`).

Numbers always carry the device, dtype, batch size and compile setting they were measured with; the
anchors in DESIGN.md were measured on one H200 at 256x256 with the DR2 UNet flags.
"""

from __future__ import annotations

import json
import platform
import resource
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from lightning_dr2.diffusion import create_diffusion
from lightning_dr2.nets.unet import DR2_FFHQ256_FLAGS, UNet

TINY_UNET_FLAGS: dict[str, Any] = {
    **DR2_FFHQ256_FLAGS,
    "image_size": 64,
    "num_channels": 32,
    "channel_mult": "1,2,2,2",
    "num_head_channels": 32,
}
UNET_PRESETS = {"dr2": DR2_FFHQ256_FLAGS, "tiny": TINY_UNET_FLAGS}


def parse_overrides(items: Sequence[str], defaults: dict[str, Any]) -> dict[str, Any]:
    """`key=value` strings onto `defaults`, converted to the default's type; unknown keys are errors."""
    out = dict(defaults)
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in defaults:
            raise ValueError(f"bad benchmark option '{item}': expected key=value with key in {sorted(defaults)}")
        kind = type(defaults[key])
        if kind is bool:
            out[key] = value.lower() in ("1", "true", "yes", "on")
        elif defaults[key] is None:
            out[key] = value
        else:
            out[key] = kind(value)
    return out


def device_info(device: torch.device) -> dict[str, Any]:
    if device.type == "cuda":
        return {"device": torch.cuda.get_device_name(device), "device_type": "cuda"}
    return {
        "device": f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "device_type": "cpu",
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_gib(device: torch.device) -> float:
    """Peak allocated GPU memory, or the process's peak RSS on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def time_steps(step: Callable[[], None], device: torch.device, warmup: int, steps: int) -> float:
    """Seconds per call, after `warmup` untimed calls (compilation, autotuning, allocator warm-up)."""
    for _ in range(warmup):
        step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return (time.perf_counter() - start) / steps


def bench_train(options: Sequence[str]) -> dict[str, Any]:
    """One DDPM training step (hybrid loss, AdamW) of the UNet: img/s and peak memory."""
    default_device = "cuda" if torch.cuda.is_available() else "cpu"
    opts = parse_overrides(
        options,
        {
            "flags": "dr2" if default_device == "cuda" else "tiny",
            "batch": 16 if default_device == "cuda" else 4,
            "dtype": "bf16" if default_device == "cuda" else "fp32",
            "compile": default_device == "cuda",
            "channels_last": default_device == "cuda",
            "device": default_device,
            "steps": 20 if default_device == "cuda" else 3,
            "warmup": 5 if default_device == "cuda" else 1,
        },
    )
    if opts["flags"] not in UNET_PRESETS:
        raise ValueError(f"flags must be one of {sorted(UNET_PRESETS)}, got {opts['flags']!r}")
    if opts["dtype"] not in ("fp32", "bf16", "fp16"):
        raise ValueError(f"dtype must be fp32, bf16 or fp16, got {opts['dtype']!r}")
    device = torch.device(opts["device"])
    flags = UNET_PRESETS[opts["flags"]]
    torch.manual_seed(0)
    net = UNet.from_flags(flags).to(device)
    if opts["channels_last"]:
        net = net.to(memory_format=torch.channels_last)
    model = torch.compile(net) if opts["compile"] else net
    diffusion = create_diffusion(steps=1000, schedule="linear", learn_sigma=True, loss="hybrid")
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4, fused=device.type == "cuda")
    size = flags["image_size"]
    memory_format = torch.channels_last if opts["channels_last"] else torch.contiguous_format
    x = (torch.rand(opts["batch"], 3, size, size, device=device) * 2 - 1).contiguous(memory_format=memory_format)
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(opts["dtype"])
    scaler = torch.amp.GradScaler(device.type, enabled=opts["dtype"] == "fp16")

    def step() -> None:
        t = torch.randint(0, diffusion.num_timesteps, (x.shape[0],), device=device)
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            loss = diffusion.training_losses(model, x, t)["loss"].mean()
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        scaler.step(optimizer)
        scaler.update()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds = time_steps(step, device, opts["warmup"], opts["steps"])
    return {
        "benchmark": "train",
        **device_info(device),
        "unet_flags": opts["flags"],
        "image_size": size,
        "params_m": round(sum(p.numel() for p in net.parameters()) / 1e6, 2),
        "dtype": opts["dtype"],
        "batch": opts["batch"],
        "compile": opts["compile"],
        "channels_last": opts["channels_last"],
        "steps_timed": opts["steps"],
        "ms_per_step": round(seconds * 1e3, 2),
        "img_per_s": round(opts["batch"] / seconds, 2),
        "peak_memory_gib": round(peak_memory_gib(device), 3),
        "torch": torch.__version__,
    }


BENCHMARKS: dict[str, Callable[[Sequence[str]], dict[str, Any]]] = {"train": bench_train}


def run_benchmark(what: str, options: Sequence[str], out: str | Path | None = None) -> dict[str, Any]:
    if what not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {what!r}; choose from {sorted(BENCHMARKS)}")
    result = BENCHMARKS[what](options)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(result, indent=2))
    return result
