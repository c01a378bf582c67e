"""Benchmarks with JSON output (`python -m lightning_dr2 bench <what> key=value ...`, `make bench`).

Numbers always carry the device, dtype, batch size and compile setting they were measured with; the
anchors in DESIGN.md were measured on one H200 at 256x256 with the DR2 UNet flags.
"""

from __future__ import annotations

import json
import math
import platform
import resource
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from lightning_dr2.diffusion import PUBLISHED_DIFFUSION, build_diffusion
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
    diffusion = build_diffusion(PUBLISHED_DIFFUSION)
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


def psnr_db(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR of two [-1, 1] batches on the [0, 1] scale (a benchmark-side agreement check)."""
    mse = ((a.float() - b.float()) / 2).pow(2).mean().item()
    return float("inf") if mse == 0 else 10 * math.log10(1.0 / mse)


def bench_restore(options: Sequence[str]) -> dict[str, Any]:
    """DR2 + SPARNetHD end to end (random weights): ms/image, UNet calls, peak memory, bf16-vs-fp32 PSNR.

    On GPU the defaults are the DR2 release's networks at (N, tau) = (8, 35), 256 -> 512; on CPU a tiny
    UNet and SPARNet (64 px) so the benchmark finishes in seconds. The fast path (bf16 autocast,
    channels_last, optional torch.compile) is compared with the fp32 eager path under identical noise.
    """
    cuda = torch.cuda.is_available()
    opts = parse_overrides(
        options,
        {
            "flags": "dr2" if cuda else "tiny",
            "batch": 32 if cuda else 2,
            "N": 8,
            "tau": 35,
            "dtype": "bf16" if cuda else "fp32",
            "compile": cuda,
            "channels_last": cuda,
            "device": "cuda" if cuda else "cpu",
            "repeats": 3 if cuda else 1,
            "enhancer": "sparnethd",
            "check": True,
        },
    )
    from lightning_dr2.dr2.pipeline import DR2E, build_enhancer

    device = torch.device(opts["device"])
    torch.manual_seed(0)
    unet = UNet.from_flags(UNET_PRESETS[opts["flags"]]).eval()
    tiny = opts["flags"] == "tiny"
    enhancer_options = {"size": 128, "min_ch": 16, "max_ch": 64, "min_feat_size": 16, "res_depth": 3} if tiny else {}
    enhancer = build_enhancer(opts["enhancer"], "random", enhancer_options)
    enhancer_size = int(getattr(enhancer, "size", 512 if not tiny else 128))
    size = unet.image_size
    lq = torch.rand(opts["batch"], 3, size, size, generator=torch.Generator().manual_seed(1)) * 2 - 1
    seeds = list(range(opts["batch"]))
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(opts["dtype"])

    def build(fast: bool) -> DR2E:
        pipe = DR2E(
            unet, enhancer, N=opts["N"], tau=opts["tau"], enhancer_size=enhancer_size, dtype=dtype if fast else None
        ).to(device)
        return pipe.optimize(compile=opts["compile"], channels_last=opts["channels_last"]) if fast else pipe

    fast = build(True)
    run = lambda: fast.restore_tensors(lq, seeds=seeds)  # noqa: E731
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds = time_steps(run, device, warmup=1, steps=opts["repeats"])
    result = {
        "benchmark": "restore",
        **device_info(device),
        "unet_flags": opts["flags"],
        "unet_size": size,
        "enhancer": opts["enhancer"],
        "enhancer_size": enhancer_size,
        "N": opts["N"],
        "tau": opts["tau"],
        "omega": fast.omega_value,
        "unet_calls_per_image": fast.dr2.unet_calls(opts["N"], opts["tau"]),
        "dtype": opts["dtype"],
        "batch": opts["batch"],
        "compile": opts["compile"],
        "channels_last": opts["channels_last"],
        "ms_per_image": round(seconds * 1e3 / opts["batch"], 2),
        "img_per_s": round(opts["batch"] / seconds, 2),
        "peak_memory_gib": round(peak_memory_gib(device), 3),
        "torch": torch.__version__,
    }
    if opts["check"] and dtype is not None:
        # Same seeds -> same noise: the fast path must agree with fp32 eager (goal: >= 35 dB).
        reference = DR2E(unet, enhancer, N=opts["N"], tau=opts["tau"], enhancer_size=enhancer_size).to(device)
        result["psnr_fast_vs_fp32_db"] = round(
            psnr_db(run()["output"], reference.restore_tensors(lq, seeds=seeds)["output"]), 2
        )
    return result


def bench_eval(options: Sequence[str]) -> dict[str, Any]:
    """Evaluation overhead against restoration time, per image, at one batch size.

    Times (a) DR2 + SPARNetHD restoration (as `bench restore`), (b) the metric suite (PSNR, SSIM, LPIPS,
    FID features, Deg; networks with random weights, same cost as the real ones) and (c) the PNG I/O
    of the eval job (encode output, decode output + ground truth + input). Goal: (b + c) < 10% of (a).
    """
    import io

    from PIL import Image

    from lightning_dr2.dr2.pipeline import to_uint8_images
    from lightning_dr2.metrics.suite import MetricSuite

    cuda = torch.cuda.is_available()
    restore_opts = [o for o in options if not o.startswith(("metrics=", "check="))]
    restore = bench_restore([*restore_opts, "check=false"])
    opts = parse_overrides(
        [o for o in options if o.split("=")[0] in ("batch", "device", "metrics")],
        {"batch": restore["batch"], "device": "cuda" if cuda else "cpu", "metrics": "psnr,ssim,lpips,fid,deg"},
    )
    device = torch.device(opts["device"])
    size = restore["enhancer_size"]
    suite = MetricSuite(opts["metrics"].split(","), random_networks=True).to(device)
    gen = torch.Generator().manual_seed(0)
    pred = (torch.rand(opts["batch"], 3, size, size, generator=gen) * 2 - 1).to(device)
    target = (torch.rand(opts["batch"], 3, size, size, generator=gen) * 2 - 1).to(device)
    metric_s = time_steps(lambda: suite.update(pred, target), device, warmup=1, steps=2)
    images = to_uint8_images(pred)

    def png_io() -> None:
        for image in images:
            buffer = io.BytesIO()
            Image.fromarray(image).save(buffer, format="PNG")
            for _ in range(3):  # output, ground truth, input are read back by the scoring job
                buffer.seek(0)
                Image.open(buffer).convert("RGB").load()

    io_s = time_steps(png_io, torch.device("cpu"), warmup=0, steps=1)
    restore_ms = restore["ms_per_image"]
    metric_ms = metric_s * 1e3 / opts["batch"]
    io_ms = io_s * 1e3 / opts["batch"]
    return {
        "benchmark": "eval",
        **device_info(device),
        "batch": opts["batch"],
        "image_size": size,
        "metrics": opts["metrics"],
        "restore_ms_per_image": restore_ms,
        "metrics_ms_per_image": round(metric_ms, 2),
        "png_io_ms_per_image": round(io_ms, 2),
        "overhead_fraction": round((metric_ms + io_ms) / restore_ms, 4),
        "restore": restore,
        "torch": torch.__version__,
    }


BENCHMARKS: dict[str, Callable[[Sequence[str]], dict[str, Any]]] = {
    "train": bench_train,
    "restore": bench_restore,
    "eval": bench_eval,
}


def run_benchmark(what: str, options: Sequence[str], out: str | Path | None = None) -> dict[str, Any]:
    if what not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {what!r}; choose from {sorted(BENCHMARKS)}")
    result = BENCHMARKS[what](options)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(result, indent=2))
    return result
