"""`make quickstart`: the framework end to end on generated faces, on a laptop CPU, in minutes.

1. train a tiny DDPM on synthetic faces (EMA sample grid, loss curve, exported UNet);
2. degrade held-out synthetic faces (blur, downsample, noise, JPEG) and run DR2 with the trained UNet:
   an input | DR2 | target grid and the PSNR of both against the target;
3. build a tiny benchmark set (4x/8x x mild/severe) from held-out faces and evaluate the pipeline on
   it like the papers do: metrics table (PSNR/SSIM always; LPIPS/FID/Deg when their weights are
   present) and a report (report.md, self-contained report.html) with input | DR2 | output | GT grids.

Every grid shows faces upscaled (nearest) to at least 128 px. The job returns a `QuickstartResult`;
`cli.py` prints it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from lightning_dr2.config import EvalConfig, load_config
from lightning_dr2.datasets.degradations import DegradationSpec, degrade_with_seed
from lightning_dr2.datasets.synthetic import face_seed, render_face
from lightning_dr2.datasets.testset_builder import build_testset
from lightning_dr2.datasets.testset_spec import load_spec
from lightning_dr2.dr2.pipeline import DR2E
from lightning_dr2.evaluation import EvalResult, run_eval
from lightning_dr2.io import images_to_tensor, to_uint8
from lightning_dr2.metrics.psnr_ssim import psnr_per_image
from lightning_dr2.report import metrics_table, save_grid
from lightning_dr2.train import train_ddpm

log = logging.getLogger(__name__)

HELD_OUT_SEED = 987_654  # synthetic faces never seen in training (training uses seed 0)
# A 4x degradation of moderate strength, in the spirit of the CelebA-Test splits.
DEMO_DEGRADATION = DegradationSpec(
    kernel_size=21, sigma_range=(1.0, 2.0), scale_range=(4, 4), noise_range=(5, 10), jpeg_range=(60, 80)
)


def dr2_demo(unet_path: Path, out_dir: Path, size: int, n: int = 8, N: int = 4, tau: int = 20) -> dict[str, float]:  # noqa: N803
    """Degrade `n` held-out faces, restore them with DR2 (no enhancer), write the grid, return PSNRs."""
    targets = [render_face(face_seed(HELD_OUT_SEED, i), size) for i in range(n)]
    degraded = [degrade_with_seed(face, DEMO_DEGRADATION, seed=(HELD_OUT_SEED, i))[0] for i, face in enumerate(targets)]
    pipe = DR2E.from_weights(unet_path, enhancer="none", N=N, tau=tau, enhancer_size=size)
    lq, hq = images_to_tensor(degraded), images_to_tensor(targets)
    restored = pipe.restore_tensors(lq, seeds=list(range(n)))["dr2"]
    grid = torch.stack([lq, restored, hq], dim=1).flatten(0, 1)  # rows: input | DR2 | target
    grid_path = save_grid(grid, out_dir / "dr2_input_restored_target.png", nrow=3)
    psnr_in = psnr_per_image(to_uint8(lq), to_uint8(hq)).mean().item()
    psnr_out = psnr_per_image(to_uint8(restored), to_uint8(hq)).mean().item()
    return {
        "grid": str(grid_path),
        "psnr_input": psnr_in,
        "psnr_dr2": psnr_out,
        "N": N,
        "tau": tau,
        "omega": pipe.omega_value,
    }


def eval_demo(unet_path: Path, run_dir: Path, size: int, n: int = 8, N: int = 4, tau: int = 20) -> EvalResult:  # noqa: N803
    """Tiny synthetic benchmark (2 scales x 2 severities) + the eval job on it."""
    hq_dir = run_dir / "eval_hq"
    hq_dir.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        path = hq_dir / f"{i:03d}.png"
        if not path.exists():
            Image.fromarray(render_face(face_seed(HELD_OUT_SEED + 1, i), size)).save(path)
    testset = run_dir / "testset"
    spec = load_spec("tiny_synthetic")
    spec.hq_size = size  # the benchmark at the tiny model's resolution
    build_testset(hq_dir, testset, spec, progress=False)
    cfg = load_config(
        None,
        [
            f"unet_weights={unet_path}",
            "enhancer.name=none",
            f"enhancer.size={size}",
            f"sets=[{{name: synthetic, root: {testset}}}]",
            f"settings=[{{N: {N}, tau: {tau}}}]",
            "skip_missing_weights=true",
            "reference=true",
            f"runs_dir={run_dir}",
            "experiment=eval",
            "run=quickstart",
            "wandb.mode=disabled",
            "num_workers=0",
            f"batch_size={n}",
            "report_images=4",
            "progress_bar=false",
        ],
        schema=EvalConfig,
    )
    return run_eval(cfg)


@dataclass
class QuickstartResult:
    """Where the quickstart wrote its outputs, the DR2 demo's numbers and the evaluation."""

    outputs: dict[str, str]
    demo: dict[str, Any]
    evaluation: EvalResult
    seconds: float

    def summary(self) -> str:
        """What `cli.py` prints at the end: the metrics table, the files, and the report to open."""
        demo = self.demo
        lines = [metrics_table(self.evaluation.table_rows)]
        lines += [f"  note: {metric}: {note}" for metric, note in self.evaluation.notes.items()]
        lines += ["", f"[quickstart] done in {self.seconds:.0f} s"]
        lines += [f"  {name:30s} {path}" for name, path in self.outputs.items()]
        lines += [
            "",
            f"  DR2 (N={demo['N']}, tau={demo['tau']}, omega={demo['omega']}) on held-out faces: "
            f"PSNR input {demo['psnr_input']:.2f} dB -> DR2 output {demo['psnr_dr2']:.2f} dB (vs. clean target)",
            "",
            f"open the report: {self.evaluation.report_html}",
        ]
        return "\n".join(lines)


def run_quickstart(overrides: Sequence[str] = (), progress: Callable[[str], None] = log.info) -> QuickstartResult:
    """Train, demo DR2, evaluate; `progress` receives one line per stage (cli.py passes `print`)."""
    start = time.perf_counter()
    cfg = load_config("quickstart", list(overrides))
    progress(
        f"[quickstart] 1/3 training a tiny DDPM on {'synthetic ' if cfg.data.synthetic else ''}"
        f"{cfg.data.image_size}px faces in {cfg.data.root} "
        f"for {cfg.trainer.max_steps} steps (CPU)"
    )
    result = train_ddpm(cfg)
    progress("[quickstart] 2/3 DR2 on 8 held-out synthetic faces degraded 4x (blur, noise, JPEG)")
    demo = dr2_demo(result.export_path, result.run_dir / "dr2", cfg.data.image_size)
    progress("[quickstart] 3/3 tiny benchmark (4x/8x x mild/severe) and evaluation, as in the papers")
    evaluation = eval_demo(result.export_path, result.run_dir, cfg.data.image_size)
    outputs = {
        "run directory": str(result.run_dir),
        f"sample grid (EMA, {cfg.sampling.method})": str(result.sample_grid),
        "loss curve": str(result.loss_curve),
        "exported UNet": str(result.export_path),
        "DR2 grid (input|DR2|target)": demo["grid"],
        "metrics (results.json/.csv)": str(evaluation.run_dir / "results.json"),
        "report (table + grids)": str(evaluation.report_md),
        "report, one HTML file": str(evaluation.report_html),
    }
    return QuickstartResult(outputs, demo, evaluation, time.perf_counter() - start)
