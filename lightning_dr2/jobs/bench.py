"""Benchmarks with JSON output (`python -m lightning_dr2 bench <what> key=value ...`, `make bench`).

Numbers always carry the device, dtype, batch size and compile setting they were measured with; the
anchors in DESIGN.md were measured on one H200 at 256x256 with the DR2 UNet flags.
"""

from __future__ import annotations

import copy
import math
import platform
import resource
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from omegaconf import DictConfig, OmegaConf

from lightning_dr2.config.loader import ConfigError, load_structured
from lightning_dr2.diffusion import PUBLISHED_DIFFUSION, build_diffusion
from lightning_dr2.files import write_json
from lightning_dr2.image_io import read_image, to_uint8_images, write_png
from lightning_dr2.nets.unet import DR2_FFHQ256_FLAGS, UNet

TINY_UNET_FLAGS: dict[str, Any] = {
    **DR2_FFHQ256_FLAGS,
    "image_size": 64,
    "num_channels": 32,
    "channel_mult": "1,2,2,2",
    "num_head_channels": 32,
}
UNET_PRESETS = {"dr2": DR2_FFHQ256_FLAGS, "tiny": TINY_UNET_FLAGS}


@dataclass
class TrainBenchOptions:
    """`bench train`: one DDPM training step of the UNet (defaults: `for_device`)."""

    DTYPES: ClassVar[tuple[str, ...]] = ("bf16", "fp16", "fp32")
    flags: str = "tiny"  # a UNET_PRESETS name: dr2 | tiny
    batch: int = 4
    dtype: str = "fp32"  # fp32 | bf16 | fp16
    compile: bool = False
    channels_last: bool = False
    device: str = "cpu"
    steps: int = 3
    warmup: int = 1

    @classmethod
    def for_device(cls, cuda: bool) -> TrainBenchOptions:
        """The DESIGN.md anchor settings on a GPU; tiny ones that finish in seconds on a CPU."""
        if not cuda:
            return cls()
        return cls(
            flags="dr2", batch=16, dtype="bf16", compile=True, channels_last=True, device="cuda", steps=20, warmup=5
        )


@dataclass
class RestoreBenchOptions:
    """`bench restore`: DR2 + enhancer end to end with random weights (defaults: `for_device`)."""

    DTYPES: ClassVar[tuple[str, ...]] = ("bf16", "fp16", "fp32")
    flags: str = "tiny"
    batch: int = 2
    N: int = 8
    tau: int = 35
    dtype: str = "fp32"
    compile: bool = False
    channels_last: bool = False
    device: str = "cpu"
    repeats: int = 1
    enhancer: str = "sparnethd"
    check: bool = True  # compare the fast path with fp32 eager (PSNR), when dtype is not fp32

    @classmethod
    def for_device(cls, cuda: bool) -> RestoreBenchOptions:
        if not cuda:
            return cls()
        return cls(flags="dr2", batch=32, dtype="bf16", compile=True, channels_last=True, device="cuda", repeats=3)


@dataclass
class EvalBenchOptions(RestoreBenchOptions):
    """`bench eval`: the restore benchmark's options, plus the metrics timed against it."""

    metrics: str = "psnr,ssim,lpips,fid,deg"  # comma-separated metric names (for_device: inherited)


@dataclass
class EvalJobBenchOptions:
    """`bench eval-job`: the whole `eval` job over a generated tiny_synthetic set, `splits` x `settings` restore
    jobs, networks saved as files (random weights) and loaded once (defaults: `for_device`)."""

    DTYPES: ClassVar[tuple[str, ...]] = ("bf16", "fp32")
    flags: str = "tiny"  # a UNET_PRESETS name: dr2 | tiny
    enhancer: str = "tiny"  # an EVAL_JOB_ENHANCERS name: tiny (128 px SPARNet) | sparnethd (512) | none
    splits: int = 2  # the first splits of tiny_synthetic (x4/x8 x mild/severe)
    settings: int = 2  # the first of DR2's demo (N, tau) settings: (4, 22), (8, 35), (16, 35)
    images: int = 2  # per split
    batch: int = 2
    metrics: str = "psnr,ssim"  # comma-separated (random-weight networks for LPIPS/FID/Deg)
    dtype: str = "fp32"
    device: str = "cpu"
    load_only: bool = False  # time loading the networks from their files only (e.g. the DR2 sizes on a CPU)

    @classmethod
    def for_device(cls, cuda: bool) -> EvalJobBenchOptions:
        if not cuda:
            return cls()
        return cls(flags="dr2", enhancer="sparnethd", splits=4, settings=3, images=32, batch=32, dtype="bf16")


DEMO_SETTINGS = ((4, 22), (8, 35), (16, 35))  # DR2's demo (N, tau)
EVAL_JOB_ENHANCERS: dict[str, tuple[str, dict[str, Any]] | None] = {
    "tiny": ("sparnet", {"size": 128, "min_ch": 16, "max_ch": 64, "min_feat_size": 16, "res_depth": 3}),
    "sparnethd": ("sparnethd", {}),
    "none": None,
}


# `bench enhancer` networks: the released SPARNetHD recipe at 512, or a 32 px SPARNet that runs in seconds on CPU.
TINY_SPARNET = {"size": 32, "min_ch": 8, "max_ch": 32, "min_feat_size": 8, "res_depth": 0, "bottleneck_size": 32}
ENHANCER_PRESETS: dict[str, dict[str, Any]] = {
    "sparnethd": {"generator": {"name": "sparnethd", "options": {}}, "discriminator": {}},
    "tiny": {
        "generator": {"name": "sparnet", "options": TINY_SPARNET},
        "discriminator": {"base_ch": 8, "max_ch": 32, "layers": 2},
    },
}


@dataclass
class EnhancerBenchOptions:
    """`bench enhancer`: one training iteration of the enhancer (D step, then G step with the recipe's four
    losses and Adam), random weights (defaults: `for_device`)."""

    DTYPES: ClassVar[tuple[str, ...]] = ("bf16", "fp32")  # fp32 or bf16 autocast, as the enhancer trains
    preset: str = "tiny"  # an ENHANCER_PRESETS name: sparnethd (512) | tiny (32 px SPARNet)
    batch: int = 2
    dtype: str = "fp32"  # fp32 | bf16 (autocast; the recipe's GPU precision)
    vgg: bool = True  # include the VGG19 perceptual loss (random weights: the same cost as the real ones)
    device: str = "cpu"
    steps: int = 2
    warmup: int = 1

    @classmethod
    def for_device(cls, cuda: bool) -> EnhancerBenchOptions:
        if not cuda:
            return cls()
        return cls(preset="sparnethd", batch=2, dtype="bf16", device="cuda", steps=10, warmup=3)


@dataclass
class CacheBenchOptions:
    """`bench dr2-cache`: the `dr2-cache` job over generated faces with a random UNet (defaults: `for_device`)."""

    DTYPES: ClassVar[tuple[str, ...]] = ("bf16", "fp32")  # the job's dtype: fp32 or bf16 autocast
    flags: str = "tiny"
    images: int = 8
    batch: int = 4
    N: int = 8
    tau: int = 35
    dtype: str = "fp32"  # fp32 | bf16
    compile: bool = False
    channels_last: bool = False
    device: str = "cpu"

    @classmethod
    def for_device(cls, cuda: bool) -> CacheBenchOptions:
        if not cuda:
            return cls()
        return cls(flags="dr2", images=256, batch=32, dtype="bf16", compile=True, channels_last=True, device="cuda")


def load_options(schema: type, options: Sequence[str]) -> DictConfig:
    """`key=value` options onto the schema's defaults for this machine; unknown keys and wrong types raise
    `ConfigError` naming the key (the same machinery as experiment configs)."""
    cfg = load_structured(schema.for_device(torch.cuda.is_available()), overrides=options)
    if "flags" in cfg:
        _choice(cfg, "flags", sorted(UNET_PRESETS))
    if "preset" in cfg:
        _choice(cfg, "preset", sorted(ENHANCER_PRESETS))
    if schema is EvalJobBenchOptions:
        _choice(cfg, "enhancer", sorted(EVAL_JOB_ENHANCERS))
        for key, most in (("splits", 4), ("settings", len(DEMO_SETTINGS)), ("images", None), ("batch", None)):
            if cfg[key] < 1 or (most is not None and cfg[key] > most):
                raise ConfigError(f"bench option {key}={cfg[key]} must be in [1, {most or 'any'}]")
    _choice(cfg, "dtype", list(schema.DTYPES))
    return cfg


def _choice(cfg: DictConfig, key: str, allowed: list[str]) -> None:
    if cfg[key] not in allowed:
        raise ConfigError(f"benchmark option {key}={cfg[key]!r}: expected one of {allowed}")


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


def result_of(benchmark: str, device: torch.device, fields: dict[str, Any]) -> dict[str, Any]:
    """A benchmark's JSON: what ran and where, its own fields, then the peak memory and the torch version."""
    return {
        "benchmark": benchmark,
        **device_info(device),
        **fields,
        "peak_memory_gib": round(peak_memory_gib(device), 3),
        "torch": torch.__version__,
    }


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


def bench_train(opts: DictConfig) -> dict[str, Any]:
    """One DDPM training step (hybrid loss, AdamW) of the UNet: img/s and peak memory."""
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
    return result_of(
        "train",
        device,
        {
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
        },
    )


def psnr_db(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR of two [-1, 1] batches on the [0, 1] scale (a benchmark-side agreement check)."""
    mse = ((a.float() - b.float()) / 2).pow(2).mean().item()
    return float("inf") if mse == 0 else 10 * math.log10(1.0 / mse)


def bench_restore(opts: DictConfig) -> dict[str, Any]:
    """DR2 + SPARNetHD end to end (random weights): ms/image, UNet calls, peak memory, bf16-vs-fp32 PSNR.

    On GPU the defaults are the DR2 release's networks at (N, tau) = (8, 35), 256 -> 512; on CPU a tiny
    UNet and SPARNet (64 px) so the benchmark finishes in seconds. The fast path (bf16 autocast,
    channels_last, optional torch.compile) is compared with the fp32 eager path under identical noise.
    """
    from lightning_dr2.dr2.pipeline import DR2E
    from lightning_dr2.exports.restorer import load_restorer

    device = torch.device(opts["device"])
    torch.manual_seed(0)
    unet = UNet.from_flags(UNET_PRESETS[opts["flags"]]).eval()
    tiny = opts["flags"] == "tiny"
    enhancer_options = {"size": 128, "min_ch": 16, "max_ch": 64, "min_feat_size": 16, "res_depth": 3} if tiny else {}
    loaded = load_restorer(opts["enhancer"], "random", enhancer_options)
    enhancer = None if loaded is None else loaded.module
    enhancer_size = loaded.size if loaded is not None and loaded.size else (512 if not tiny else 128)
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
    result = result_of(
        "restore",
        device,
        {
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
        },
    )
    if opts["check"] and dtype is not None:
        # Same seeds -> same noise: the fast path must agree with fp32 eager (goal: >= 35 dB).
        reference = DR2E(unet, enhancer, N=opts["N"], tau=opts["tau"], enhancer_size=enhancer_size).to(device)
        result["psnr_fast_vs_fp32_db"] = round(
            psnr_db(run()["output"], reference.restore_tensors(lq, seeds=seeds)["output"]), 2
        )
    return result


def bench_eval(opts: DictConfig) -> dict[str, Any]:
    """Evaluation overhead against restoration time, per image, at one batch size.

    Times (a) DR2 + SPARNetHD restoration (as `bench restore`), (b) the metric suite (PSNR, SSIM, LPIPS,
    FID features, Deg; networks with random weights, same cost as the real ones) and (c) the PNG I/O
    of the eval job (encode output, decode output + ground truth + input). Goal: (b + c) < 10% of (a).
    """
    from lightning_dr2.metrics.suite import MetricSuite

    restore = bench_restore(OmegaConf.merge(opts, {"check": False}))
    device = torch.device(opts["device"])
    size = restore["enhancer_size"]
    suite = MetricSuite(opts["metrics"].split(","), random_networks=True).to(device)
    gen = torch.Generator().manual_seed(0)
    pred = (torch.rand(opts["batch"], 3, size, size, generator=gen) * 2 - 1).to(device)
    target = (torch.rand(opts["batch"], 3, size, size, generator=gen) * 2 - 1).to(device)
    metric_s = time_steps(lambda: suite.update(pred, target), device, warmup=1, steps=2)
    images = to_uint8_images(pred)

    def png_io() -> None:
        with tempfile.TemporaryDirectory() as folder:
            for i, image in enumerate(images):
                path = write_png(Path(folder) / f"{i}.png", image)
                for _ in range(3):  # output, ground truth, input are read back by the scoring job
                    read_image(path)

    io_s = time_steps(png_io, torch.device("cpu"), warmup=0, steps=1)
    restore_ms = restore["ms_per_image"]
    metric_ms = metric_s * 1e3 / opts["batch"]
    io_ms = io_s * 1e3 / opts["batch"]
    return result_of(
        "eval",
        device,
        {
            "batch": opts["batch"],
            "image_size": size,
            "metrics": opts["metrics"],
            "restore_ms_per_image": restore_ms,
            "metrics_ms_per_image": round(metric_ms, 2),
            "png_io_ms_per_image": round(io_ms, 2),
            "overhead_fraction": round((metric_ms + io_ms) / restore_ms, 4),
            "restore": restore,
        },
    )


def bench_eval_job(opts: DictConfig) -> dict[str, Any]:
    """The `eval` job end to end (restore jobs, scoring, report) over `splits` x `settings`, with the UNet and the
    enhancer saved as exports (random weights) and loaded once for the whole job; and one load of them alone.

    `network_load_s` is one warm load (file cache and sha256 cache warm, as every load after an eval's first);
    `per_job_loading_s` is what the job takes when every split x setting loads its own networks (before issue
    14): the job plus (jobs - 1) such loads. `load_only=true` times the load alone (the DR2 sizes on a CPU)."""
    from lightning_dr2.config.pipeline import EvalConfig
    from lightning_dr2.config.recipes import load_config
    from lightning_dr2.datasets.synthetic import generate_faces
    from lightning_dr2.datasets.testset_builder import build_testset
    from lightning_dr2.datasets.testset_spec import load_spec
    from lightning_dr2.dr2.pipeline import load_networks
    from lightning_dr2.exports import write_enhancer, write_unet
    from lightning_dr2.jobs.evaluate import run_eval
    from lightning_dr2.nets.restorers import build_restorer

    device = torch.device(opts["device"])
    flags = UNET_PRESETS[opts["flags"]]
    spec = load_spec("tiny_synthetic")
    splits = list(spec.splits)[: opts["splits"]]
    settings = DEMO_SETTINGS[: opts["settings"]]
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        torch.manual_seed(0)
        unet = write_unet(UNet.from_flags(flags), flags, PUBLISHED_DIFFUSION, root / "unet.pt")
        overrides = [
            f"unet_weights={unet}",
            f"sets=[{{name: tiny, root: {root / 'set'}, splits: [{', '.join(splits)}], limit: {opts['images']}}}]",
            "settings=[" + ", ".join(f"{{N: {n}, tau: {tau}}}" for n, tau in settings) + "]",
            f"metrics=[{opts['metrics']}]",
            "random_metric_networks=true",
            f"runs_dir={root / 'runs'}",
            "run=bench",
            "wandb.mode=disabled",
            "report_images=0",
            "report_worst=0",
            f"batch_size={opts['batch']}",
            f"dtype={opts['dtype']}",
            f"accelerator={'gpu' if device.type == 'cuda' else 'cpu'}",
            "devices=1",
            "num_workers=0",
            "progress_bar=false",
        ]
        enhancer = EVAL_JOB_ENHANCERS[opts["enhancer"]]
        if enhancer is None:
            overrides.append("enhancer.name=none")
        else:
            name, options = enhancer
            export = write_enhancer(build_restorer(name, options), name, options, root / "enhancer.pt")
            overrides.append(f"enhancer.weights={export}")
        cfg = load_config(None, overrides, EvalConfig)
        load_networks(cfg)  # warm: the sha256 cache and the OS file cache, as every load after an eval's first
        start = time.perf_counter()
        load_networks(cfg)
        load_s = time.perf_counter() - start
        fields: dict[str, Any] = {"unet_flags": opts["flags"], "enhancer": opts["enhancer"]}
        fields["network_load_s"] = round(load_s, 3)
        if not opts["load_only"]:
            hq = root / "hq"
            generate_faces(hq, n=opts["images"], size=spec.hq_size, seed=0, workers=1)
            build_testset(hq, root / "set", spec, progress=False)
            start = time.perf_counter()
            rows = run_eval(cfg).rows
            job_s = time.perf_counter() - start
            jobs = len(splits) * len(settings)
            fields |= {
                "splits": len(splits),
                "settings": len(settings),
                "images_per_split": opts["images"],
                "rows": len(rows),
                "metrics": opts["metrics"],
                "dtype": opts["dtype"],
                "batch": opts["batch"],
                "job_s": round(job_s, 3),
                "network_loads": 1,
                "per_job_loading_s": round(job_s + (jobs - 1) * load_s, 3),
                "saved_fraction": round((jobs - 1) * load_s / (job_s + (jobs - 1) * load_s), 4),
            }
    return result_of("eval-job", device, fields)


def bench_enhancer(opts: DictConfig) -> dict[str, Any]:
    """One enhancer training iteration (D step, then G step: L1, perceptual, feature matching, hinge GAN;
    Adam G/D as in the recipe): img/s and peak memory. The networks are `EnhancerModule`'s own."""
    from lightning_dr2.modules.enhancer import EnhancerModule
    from lightning_dr2.nets.restorers import native_size

    device = torch.device(opts["device"])
    preset = ENHANCER_PRESETS[opts["preset"]]
    torch.manual_seed(0)
    module = EnhancerModule(
        generator=preset["generator"],
        discriminator=preset["discriminator"],
        loss={} if opts["vgg"] else {"vgg": 0.0},
        optim={"lr_g": 1e-4, "lr_d": 4e-4, "betas": [0.5, 0.99]},
        vgg_weights="random",
    ).to(device)
    module.frozen_to_device()
    opt_g, opt_d = module.configure_optimizers()
    size = native_size(module.generator)
    gen = torch.Generator().manual_seed(1)
    y = (torch.rand(opts["batch"], 3, size, size, generator=gen) * 2 - 1).to(device)
    x = (torch.rand(opts["batch"], 3, size, size, generator=gen) * 2 - 1).to(device)
    amp = opts["dtype"] == "bf16"

    def update(optimizer: torch.optim.Optimizer, losses: Callable[[], dict[str, torch.Tensor]], key: str) -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = losses()[key]
        loss.backward()
        optimizer.step()

    def step() -> None:
        update(opt_d, lambda: module.discriminator_losses(y, x), "d_loss")
        update(opt_g, lambda: module.generator_losses(y, x), "g_loss")

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds = time_steps(step, device, opts["warmup"], opts["steps"])
    return result_of(
        "enhancer",
        device,
        {
            "preset": opts["preset"],
            "generator": preset["generator"]["name"],
            "image_size": size,
            "generator_params_m": round(sum(p.numel() for p in module.generator.parameters()) / 1e6, 2),
            "discriminator_params_m": round(sum(p.numel() for p in module.discriminator.parameters()) / 1e6, 2),
            "vgg": opts["vgg"],
            "dtype": opts["dtype"],
            "batch": opts["batch"],
            "steps_timed": opts["steps"],
            "ms_per_step": round(seconds * 1e3, 2),
            "img_per_s": round(opts["batch"] / seconds, 2),
        },
    )


def bench_dr2_cache(opts: DictConfig) -> dict[str, Any]:
    """The `dr2-cache` job end to end (planning, hashing, PNG decode, DR2, PNG encode, manifests) over
    generated faces with a random UNet: images/s, to set beside the DR2 stage of `bench restore`.

    A first job over one batch warms up (compilation, allocator) before the timed job on all `images`."""
    from lightning_dr2.config.pipeline import CacheConfig
    from lightning_dr2.config.recipes import load_config
    from lightning_dr2.datasets.synthetic import generate_faces
    from lightning_dr2.jobs.dr2_cache import run_cache

    device = torch.device(opts["device"])
    flags = UNET_PRESETS[opts["flags"]]
    size = flags["image_size"]
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        hq = root / "hq"
        generate_faces(hq, n=opts["images"], size=size, seed=0, workers=1)
        cfg = load_config(
            None,
            [
                "unet_weights=random",
                f"settings=[{{N: {opts['N']}, tau: {opts['tau']}}}]",
                f"batch_size={opts['batch']}",
                f"dtype={opts['dtype']}",
                f"compile={opts['compile']}",
                f"channels_last={opts['channels_last']}",
                f"accelerator={'gpu' if device.type == 'cuda' else 'cpu'}",
                "devices=1",
                "num_workers=0",
                "progress_bar=false",
            ],
            schema=CacheConfig,
        )
        cfg.net = OmegaConf.merge(cfg.net, flags)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        warm = copy.deepcopy(cfg)
        warm.hq, warm.out, warm.limit = str(hq), str(root / "warmup"), opts["batch"]
        run_cache(warm)
        cfg.hq, cfg.out = str(hq), str(root / "cache")
        summary = run_cache(cfg)
    return result_of(
        "dr2-cache",
        device,
        {
            "unet_flags": opts["flags"],
            "unet_size": size,
            "N": opts["N"],
            "tau": opts["tau"],
            "dtype": opts["dtype"],
            "batch": opts["batch"],
            "compile": opts["compile"],
            "channels_last": opts["channels_last"],
            "images": summary.made,
            "seconds": round(summary.seconds, 3),
            "img_per_s": round(summary.images_per_second, 3),
        },
    )


BENCHMARKS: dict[str, tuple[type, Callable[[DictConfig], dict[str, Any]]]] = {
    "train": (TrainBenchOptions, bench_train),
    "restore": (RestoreBenchOptions, bench_restore),
    "eval": (EvalBenchOptions, bench_eval),
    "eval-job": (EvalJobBenchOptions, bench_eval_job),
    "enhancer": (EnhancerBenchOptions, bench_enhancer),
    "dr2-cache": (CacheBenchOptions, bench_dr2_cache),
}


def run_benchmark(what: str, options: Sequence[str], out: str | Path | None = None) -> dict[str, Any]:
    """Run benchmark `what` with `key=value` options; return its JSON-ready result (also written to `out`)."""
    if what not in BENCHMARKS:
        raise ConfigError(f"unknown benchmark {what!r}; choose from {sorted(BENCHMARKS)}")
    schema, run = BENCHMARKS[what]
    result = run(load_options(schema, options))
    if out:
        write_json(out, result)
    return result
