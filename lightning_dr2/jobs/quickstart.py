"""`make quickstart`: the framework end to end on generated faces, on a laptop CPU, in minutes.

1. train a tiny DDPM from scratch on synthetic faces (EMA sample grid, loss curve, exported UNet);
2. degrade held-out synthetic faces (blur, downsample, noise, JPEG) and run DR2 on them: an input | DR2 |
   target grid and the PSNR of both against the target;
3. the enhancer: by default the shipped demo enhancer; with `from_scratch`, cache DR2 outputs of degraded
   training faces (the `dr2-cache` job) and train the tiny enhancer on them (the `train-enhancer` job,
   `experiments/enhance_tiny.yaml` in folder mode at 32 px);
4. build a tiny benchmark set (4x/8x x mild/severe) from held-out faces and evaluate DR2 alone and DR2 +
   the enhancer on it like the papers do (the `eval` job twice), then put both side by side (the
   `compare` job): metrics table with both rows (PSNR/SSIM always; LPIPS/FID/Deg when their weights are
   present) and reports (.md, self-contained .html) with input | DR2 | enhanced | target grids.

Which networks stages 2-4 run (`Networks`): by default the demo pair shipped in experiments/quickstart_weights
(a UNet trained 3000 steps by the `train` command and an enhancer trained by `train-enhancer` on the DR2 cache
of 3584 faces; tools/make_quickstart_weights.py made them, their run_info files record the commands): a few
minutes of CPU cannot train a DDPM and an enhancer that show what DR2 does (docs/benchmarks.md). With
`from_scratch` they are the two networks this run trains (about 1 minute more; weaker numbers).

Overrides starting with `enhance.` go to the enhancer recipe (`enhance.trainer.max_steps=20`), the
others to `experiments/quickstart.yaml` (the DDPM stage).

Every grid shows faces upscaled (nearest) to at least 128 px. The job returns a `QuickstartResult`;
`cli.py` prints it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from lightning_dr2.config.enhancer import EnhanceExperimentConfig
from lightning_dr2.config.loader import PROJECT_ROOT
from lightning_dr2.config.pipeline import CacheConfig, EvalConfig
from lightning_dr2.config.recipes import load_config
from lightning_dr2.datasets.degradations import DegradationSpec, degrade_with_seed
from lightning_dr2.datasets.synthetic import face_seed, generate_faces, render_face
from lightning_dr2.datasets.testset_builder import build_testset
from lightning_dr2.datasets.testset_spec import load_spec
from lightning_dr2.dr2.pipeline import DR2E
from lightning_dr2.image_io import images_to_tensor, list_images, load_pil, to_uint8, write_png
from lightning_dr2.jobs.compare import Comparison, compare
from lightning_dr2.jobs.dr2_cache import SAMPLE_DIR, CacheSummary, run_cache
from lightning_dr2.jobs.evaluate import EvalResult, run_eval
from lightning_dr2.jobs.train_ddpm import train_ddpm
from lightning_dr2.jobs.train_enhancer import EnhancerTrainResult, train_enhancer
from lightning_dr2.metrics.psnr_ssim import psnr_per_image
from lightning_dr2.report import REFERENCE_SETTING, save_grid

log = logging.getLogger(__name__)

DEMO_FACES = 8  # held-out faces per benchmark split (one eval batch)
HELD_OUT_SEED = 987_654  # synthetic faces never seen in training (training uses seed 0)
# A 4x degradation of moderate strength, in the spirit of the CelebA-Test splits.
DEMO_DEGRADATION = DegradationSpec(
    kernel_size=21, sigma_range=(1.0, 2.0), scale_range=(4, 4), noise_range=(5, 10), jpeg_range=(60, 80)
)

ENHANCE_PREFIX = "enhance."  # quickstart overrides meant for the enhancer recipe

# The demo networks stages 2-4 run by default, and the script that rebuilds them with the project's commands.
SHIPPED_DIR = PROJECT_ROOT / "experiments" / "quickstart_weights"
SHIPPED_UNET = SHIPPED_DIR / "unet_ema.pt"
SHIPPED_ENHANCER = SHIPPED_DIR / "enhancer_ema.pt"
SHIPPED_SETTING = SHIPPED_DIR / "dr2_setting.json"  # their (N, tau), chosen on the validation faces
MAKE_SHIPPED = "tools/make_quickstart_weights.py"

# The quickstart recipe beyond experiments/quickstart.yaml: each choice touches only the demo and says why.
# DR2's (N, tau) with the 500-step UNet of a --from-scratch run: the best mean PSNR over the 4 splits of the
# quickstart's own validation faces (seed VALIDATION_SEED, never the benchmark's), from the eval job's sweep over
# tau in {10, 15, 20} with N=4 (docs/benchmarks.md); tau=20 added more noise than this UNet removes (grainy DR2
# column). The shipped UNet's setting, chosen by the same sweep, is SHIPPED_SETTING. N is also the sweep's N.
DR2_N, DR2_TAU = 4, 10
VALIDATION_SEED = 24_680  # the faces (N, tau) and the enhancer recipe were chosen on
VALIDATION_DEGRADATION_SEED = 1  # their degradations (the benchmark's spec seed is 0)
VALIDATION_FACES = 16  # per split
ENHANCER_DEGRADATION_SEED = 13_579  # degradations of the enhancer's training faces, apart from the benchmark's
# The enhancer learns from DR2 of DEGRADED training faces (what it meets at test time: DR2 of clean faces is
# nearly the face itself, so an enhancer trained on those learns the identity), degraded by the benchmark's
# degradation model (experiments/testsets/tiny_synthetic.yaml, its splits in turn: `enhancer_degradations`)
# with the training faces and a seed of their own: one wide range drawn per face (blur 0.2-2, 4x-8x, noise 0-20,
# JPEG 30-100) left few mild inputs and the enhancer blurred x4_mild by 1.6 dB on the validation faces.
ENHANCER_DEGRADATION_SPEC = "tiny_synthetic"
# The splits in turn, x4_mild 4 times per turn: DR2's output there is already close to the target, and with the
# splits in equal parts the enhancer traded x4_mild (-0.14 dB, -0.005 SSIM on the validation faces) for the
# blurrier splits; x4_mild 4 times brought it to +0.05 dB, -0.001 without losing the others (docs/benchmarks.md).
ENHANCER_SPLIT_REPEATS = {"x4_mild": 4}
ENHANCER_FACES = 128  # training faces of a --from-scratch run (the DDPM's own, seed 0)
# The tiny enhancer recipe (experiments/enhance_tiny.yaml) at the quickstart's 32 px, in folder mode on the
# cache; the rest of the budget-bound choices (steps, batch) are made here and printed with the stage.
ENHANCER_OVERRIDES = (
    "generator.options.min_feat_size=8",
    "generator.options.residual=true",  # output = DR2 input + learned correction: starts at DR2, never below
    "discriminator.layers=2",  # 3 scales x 2 layers fit 32 px
    "loss.vgg=0",  # the tiny recipe's VGG19 has random weights: no perceptual meaning, only cost
    "loss.gan=0",  # the GAN terms trade PSNR/SSIM for texture; a few hundred steps only get their noise
    "loss.fm=0",
    "loss.ssim=30",  # ours: L1 alone left x4_mild's SSIM below DR2's (-0.001); x30 lifts it (+0.005), x100 costs PSNR
    "data.synthetic_n=0",
    "data.batch_size=16",  # 2x the earlier 8: a smoother L1 gradient for the short run, at twice the cost
    "data.val_n=4",
    "optim.lr_g=1e-3",  # 10x the recipe's: a few hundred iterations instead of FFHQ's epochs
    "ema.decay=0.95",  # the recipe's 0.999 would still be mostly the random init after this short run
    "trainer.max_steps=200",
    "trainer.val_check_interval=200",
    "checkpoint.every_n_steps=200",
)


def split_overrides(overrides: Sequence[str]) -> tuple[list[str], list[str]]:
    """(DDPM-stage overrides, enhancer-stage overrides without their `enhance.` prefix)."""
    ddpm = [o for o in overrides if not o.startswith(ENHANCE_PREFIX)]
    enhance = [o[len(ENHANCE_PREFIX) :] for o in overrides if o.startswith(ENHANCE_PREFIX)]
    return ddpm, enhance


@dataclass(frozen=True)
class Networks:
    """The UNet DR2 runs with in stages 2-4, the enhancer after it, the DR2 setting chosen for that UNet on the
    validation faces, and where they come from."""

    unet: Path
    enhancer: Path | None  # None: stage 3 trains one on this UNet's DR2 outputs
    N: int  # noqa: N815
    tau: int
    origin: str  # one line for the summary: which networks the numbers come from
    shipped: bool  # the demo pair of experiments/quickstart_weights (else trained in this run)


def shipped_networks(
    unet: Path = SHIPPED_UNET, enhancer: Path = SHIPPED_ENHANCER, setting: Path = SHIPPED_SETTING
) -> Networks:
    """The demo pair of experiments/quickstart_weights and its DR2 setting, checked before any work (each export
    with its sidecar)."""
    wanted = (unet, unet.with_suffix(".json"), enhancer, enhancer.with_suffix(".json"), setting)
    missing = [str(f) for f in wanted if not f.is_file()]
    if missing:
        raise FileNotFoundError(
            f"the quickstart's demo networks are missing: {', '.join(missing)}. They ship with the repository "
            f"(restore them with `git checkout -- {SHIPPED_DIR.relative_to(PROJECT_ROOT)}`); `python {MAKE_SHIPPED}` "
            "rebuilds them with the project's own commands (about 45 minutes on 2 CPU cores), and "
            "`quickstart --from-scratch` trains both networks in the run instead"
        )
    try:
        chosen = json.loads(setting.read_text())
        N, tau = int(chosen["N"]), int(chosen["tau"])  # noqa: N806
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(
            f'{setting}: expected {{"N": int, "tau": int, ...}} ({err}); {MAKE_SHIPPED} writes it'
        ) from err
    origin = (
        f"the demo networks shipped in {SHIPPED_DIR.relative_to(PROJECT_ROOT)} (UNet trained by `train`, enhancer by "
        "`train-enhancer`: see its README.md); `--from-scratch` uses the ones this run trains"
    )
    return Networks(unet, enhancer, N, tau, origin, shipped=True)


def dr2_demo(
    unet_path: Path,
    out_dir: Path,
    size: int,
    n: int = 8,
    N: int = DR2_N,  # noqa: N803
    tau: int = DR2_TAU,
) -> dict[str, float]:
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


@dataclass
class EnhancerStage:
    """The DR2 cache of the training faces and the enhancer trained on it."""

    cache: CacheSummary
    training: EnhancerTrainResult

    @property
    def export_path(self) -> Path:
        assert self.training.export_path is not None  # a single-process job exports
        return self.training.export_path


def enhancer_degradations() -> tuple[DegradationSpec, ...]:
    """The cycle of degradations of the enhancer's training faces: the benchmark model's splits
    (`ENHANCER_DEGRADATION_SPEC`), each repeated `ENHANCER_SPLIT_REPEATS` times (default once)."""
    splits = load_spec(ENHANCER_DEGRADATION_SPEC).splits
    return tuple(spec for name, spec in splits.items() for _ in range(ENHANCER_SPLIT_REPEATS.get(name, 1)))


def degraded_copies(
    hq: Path, out: Path, specs: Sequence[DegradationSpec], seed: int = ENHANCER_DEGRADATION_SEED
) -> Path:
    """`out/<name>` = `hq/<name>` degraded by `specs[i % len(specs)]` (image i, seed (seed, i)): the faces DR2
    restores for the enhancer's pairs, named like their HQ faces so the DR2 cache pairs with them."""
    out.mkdir(parents=True, exist_ok=True)
    for i, path in enumerate(list_images(hq)):
        target = out / path.relative_to(hq)
        if not target.exists():
            spec = specs[i % len(specs)]
            write_png(target, degrade_with_seed(np.array(load_pil(path)), spec, seed=(seed, i))[0])
    return out


def enhancer_training_faces(stage_dir: Path, size: int, n: int) -> tuple[Path, Path]:
    """(HQ faces, their degraded copies) for the enhancer's pairs: `n` of the DDPM's own training faces
    (seed 0) under `stage_dir/hq` and, degraded by `enhancer_degradations()`, under `stage_dir/lq`."""
    hq = stage_dir / "hq"
    generate_faces(hq, n=n, size=size, seed=0, workers=1)  # tiny faces: no process pool
    return hq, degraded_copies(hq, stage_dir / "lq", enhancer_degradations())


def dr2_setting(N: int = DR2_N, tau: int = DR2_TAU) -> str:  # noqa: N803
    """The one DR2 setting the enhancer learns from and the benchmark evaluates, as a `settings=` value."""
    return f"[{{N: {N}, tau: {tau}}}]"


def cache_overrides(unet_path: Path, N: int = DR2_N, tau: int = DR2_TAU) -> list[str]:  # noqa: N803
    """The `dr2-cache` job's overrides for the enhancer's training inputs."""
    return [f"unet_weights={unet_path}", f"settings={dr2_setting(N, tau)}", "batch_size=64", "num_workers=0"]


def enhancer_recipe(
    unet_path: Path,
    hq: Path,
    dr2_root: Path,
    size: int,
    run_dir: Path,
    N: int = DR2_N,
    tau: int = DR2_TAU,  # noqa: N803
) -> list[str]:
    """The `train-enhancer enhance_tiny` overrides of the quickstart's enhancer (ENHANCER_OVERRIDES at `size`,
    folder mode on the DR2 cache `dr2_root` paired with `hq`), run as `run_dir/enhance_tiny/enhancer`."""
    return [
        *ENHANCER_OVERRIDES,
        f"generator.options.size={size}",
        f"data.size={size}",
        "data.mode=folder",
        f"data.hq_root={hq}",
        f"data.dr2_root={dr2_root}",
        f"dr2.unet_weights={unet_path}",
        f"dr2.settings={dr2_setting(N, tau)}",
        f"runs_dir={run_dir}",
        "run=enhancer",
    ]


def enhancer_stage(
    unet_path: Path,
    run_dir: Path,
    size: int,
    overrides: Sequence[str] = (),
    n: int | None = None,
    N: int = DR2_N,  # noqa: N803
    tau: int = DR2_TAU,
) -> EnhancerStage:
    """Cache DR2(x) of `n` (default ENHANCER_FACES) degraded training faces with the trained UNet
    (`enhancer_training_faces`), then train the tiny enhancer on those pairs."""
    stage_dir = run_dir / "enhancer"
    hq, dr2_input = enhancer_training_faces(stage_dir, size, ENHANCER_FACES if n is None else n)
    cache_cfg = load_config(None, [*cache_overrides(unet_path, N, tau), "progress_bar=false"], schema=CacheConfig)
    cache_cfg.hq, cache_cfg.out = str(dr2_input), str(stage_dir / "dr2_cache")
    cache = run_cache(cache_cfg)
    recipe = enhancer_recipe(unet_path, hq, cache.output / SAMPLE_DIR, size, run_dir, N, tau)
    cfg = load_config("enhance_tiny", [*recipe, *overrides], schema=EnhanceExperimentConfig)
    return EnhancerStage(cache, train_enhancer(cfg))


def held_out_testset(root: Path, size: int, n: int, face_seed_base: int, degradation_seed: int | None = None) -> Path:
    """The tiny synthetic benchmark (2 scales x 2 severities, experiments/testsets/tiny_synthetic.yaml) of `n`
    faces rendered with seeds `face_seed(face_seed_base, i)`, at the model's size, under `root/testset`."""
    hq_dir = root / "eval_hq"
    hq_dir.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        path = hq_dir / f"{i:03d}.png"
        if not path.exists():
            Image.fromarray(render_face(face_seed(face_seed_base, i), size)).save(path)
    testset = root / "testset"
    spec = load_spec("tiny_synthetic")
    spec.hq_size = size  # the benchmark at the tiny model's resolution
    if degradation_seed is not None:
        spec.seed = degradation_seed
    build_testset(hq_dir, testset, spec, progress=False)
    return testset


def demo_testset(run_dir: Path, size: int, n: int = DEMO_FACES) -> Path:
    """The quickstart's held-out benchmark: `n` faces never seen in training, the spec's own degradation seed."""
    return held_out_testset(run_dir, size, n, HELD_OUT_SEED + 1)


def validation_testset(root: Path, size: int, n: int = VALIDATION_FACES) -> Path:
    """The faces the recipe's choices are made on ((N, tau), the enhancer's recipe): other faces and other
    degradation draws than the benchmark's, so nothing is tuned on what the quickstart reports."""
    return held_out_testset(root, size, n, VALIDATION_SEED, VALIDATION_DEGRADATION_SEED)


def eval_networks(unet_path: Path, enhancer: Path | None = None) -> list[str]:
    """The eval job's networks: DR2 alone with the Input row, or DR2 + an exported `enhancer` (its JSON names
    the network and the method label)."""
    network = ["enhancer.name=none"] if enhancer is None else [f"enhancer.weights={enhancer}"]
    return [f"unet_weights={unet_path}", *network, f"reference={enhancer is None}"]


def eval_overrides(testset: Path, size: int, run_dir: Path, n: int, seed: int = 0, report_images: int = 4) -> list[str]:
    """How the quickstart runs the eval job on one of its tiny sets (the benchmark here, the validation faces in
    tools/make_quickstart_weights.py), all but the networks, the settings and the run name: one batch of `n`
    faces per split, no W&B, metrics whose weights are missing skipped; `seed`: of DR2's noise."""
    return [
        f"enhancer.size={size}",
        f"sets=[{{name: synthetic, root: {testset}}}]",
        "skip_missing_weights=true",
        f"runs_dir={run_dir}",
        "experiment=eval",
        "wandb.mode=disabled",
        "num_workers=0",
        f"seed={seed}",
        f"batch_size={n}",
        f"report_images={report_images}",
        "progress_bar=false",
    ]


def eval_demo(
    unet_path: Path,
    run_dir: Path,
    testset: Path,
    size: int,
    enhancer: Path | None = None,
    n: int = DEMO_FACES,
    N: int = DR2_N,  # noqa: N803
    tau: int = DR2_TAU,
    seed: int = 0,
) -> EvalResult:
    """The eval job on the `demo_testset`: DR2 alone (with the Input row) or DR2 + `enhancer` (`eval_networks`)."""
    run = f"run={'dr2' if enhancer is None else 'dr2_enhancer'}"
    overrides = [*eval_networks(unet_path, enhancer), f"settings={dr2_setting(N, tau)}", run]
    cfg = load_config(None, [*overrides, *eval_overrides(testset, size, run_dir, n, seed)], schema=EvalConfig)
    return run_eval(cfg)


TABLE_METRICS = (("psnr", "PSNR", "dB", 2), ("ssim", "SSIM", "", 3))  # what the closing table shows


def _by_split(rows: Sequence[dict[str, Any]], reference: bool) -> dict[str, dict[str, float]]:
    """{split: {metric: value}} of the input rows (`reference`) or of the DR2 setting rows of one eval."""
    return {row["split"]: row["metrics"] for row in rows if (row["setting"] == REFERENCE_SETTING) == reference}


def _step(before: Mapping[str, float], after: Mapping[str, float]) -> str:
    """`+0.31 dB, +0.012 better`: the change of each metric and whether all went up, all down, or both."""
    deltas = [(after[key] - before[key], unit, digits) for key, _, unit, digits in TABLE_METRICS]
    text = ", ".join(f"{d:+.{digits}f}{' ' + unit if unit else ''}" for d, unit, digits in deltas)
    verdict = "better" if all(d > 0 for d, *_ in deltas) else "worse" if all(d < 0 for d, *_ in deltas) else "mixed"
    return f"{text} {verdict}"


def improvement_table(evaluation: EvalResult, enhanced: EvalResult) -> str:
    """input -> DR2 -> DR2+enhancer per split of the benchmark, as measured (PSNR / SSIM, higher is better),
    with what each stage changed: the one-screen answer to "did it help?"."""
    inputs, dr2 = _by_split(evaluation.rows, True), _by_split(evaluation.rows, False)
    enh = _by_split(enhanced.rows, False)
    names = " / ".join(name for _, name, _, _ in TABLE_METRICS)

    def cell(metrics: Mapping[str, float]) -> str:
        return " / ".join(f"{metrics[key]:.{digits}f}" for key, _, _, digits in TABLE_METRICS)

    head = ("split", f"input ({names})", "DR2", "DR2+enhancer", "DR2 vs input", "enhancer vs DR2")
    body = [
        (
            split,
            cell(inputs[split]),
            cell(dr2[split]),
            cell(enh[split]),
            _step(inputs[split], dr2[split]),
            _step(dr2[split], enh[split]),
        )
        for split in dr2
        if split in inputs and split in enh
    ]
    widths = [max(len(row[i]) for row in (head, *body)) for i in range(len(head))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in (head, *body))


@dataclass
class QuickstartResult:
    """Where the quickstart wrote its outputs, the DR2 demo's numbers, both evaluations and their comparison."""

    outputs: dict[str, str]
    demo: dict[str, Any]
    evaluation: EvalResult  # DR2 alone (with the Input row)
    enhanced: EvalResult  # DR2 + the enhancer trained in stage 3
    comparison: Comparison
    networks: Networks  # the UNet and enhancer of stages 2-4
    seconds: float

    def summary(self) -> str:
        """What `cli.py` prints at the end: the metrics table (both rows), the files, and the report to open."""
        demo = self.demo
        lines = [self.comparison.markdown]
        notes = {**self.evaluation.notes, **self.enhanced.notes}
        lines += [f"  note: {metric}: {note}" for metric, note in notes.items()]
        lines += ["", f"[quickstart] done in {self.seconds:.0f} s"]
        lines += [f"  {name:32s} {path}" for name, path in self.outputs.items()]
        lines += [
            "",
            f"  DR2 (N={demo['N']}, tau={demo['tau']}, omega={demo['omega']}) on held-out faces: "
            f"PSNR input {demo['psnr_input']:.2f} dB -> DR2 output {demo['psnr_dr2']:.2f} dB (vs. clean target)",
            "",
            f"open the reports: {self.outputs['comparison (both rows)']} (table), "
            f"{self.enhanced.report_html} (input | DR2 | enhanced | target)",
            "",
            f"What each stage changed on the held-out benchmark (PSNR dB / SSIM, higher is better, as measured), "
            f"with {self.networks.origin}:",
            improvement_table(self.evaluation, self.enhanced),
        ]
        return "\n".join(lines)


def run_quickstart(
    overrides: Sequence[str] = (), progress: Callable[[str], None] = log.info, from_scratch: bool = False
) -> QuickstartResult:
    """Train a DDPM from scratch, then demo DR2, get the enhancer and evaluate both with the shipped demo networks
    (`from_scratch`: with the UNet trained here and an enhancer trained on it); `progress` receives one line per
    stage (cli.py passes `print`). Overrides `enhance.<key>=value` go to the enhancer recipe, the rest to the
    DDPM's."""
    start = time.perf_counter()
    ddpm_overrides, enhance_overrides = split_overrides(overrides)
    if enhance_overrides and not from_scratch:
        raise ValueError(
            f"enhancer overrides {', '.join(ENHANCE_PREFIX + o for o in enhance_overrides)} only apply when the "
            "quickstart trains its enhancer: add --from-scratch (the default run uses the shipped demo enhancer)"
        )
    shipped = None if from_scratch else shipped_networks()  # missing files fail before the training
    cfg = load_config("quickstart", ddpm_overrides)
    size = cfg.data.image_size
    progress(
        f"[quickstart] 1/4 training a tiny DDPM from scratch on {'synthetic ' if cfg.data.synthetic else ''}"
        f"{size}px faces in {cfg.data.root} for {cfg.trainer.max_steps} steps (CPU)"
    )
    result = train_ddpm(cfg)
    networks = shipped or Networks(
        result.export_path, None, DR2_N, DR2_TAU, "the networks this run trained (--from-scratch)", shipped=False
    )
    N, tau = networks.N, networks.tau  # noqa: N806
    progress(
        f"[quickstart] 2/4 DR2 (N={N}, tau={tau}) on 8 held-out synthetic faces degraded 4x (blur, noise, JPEG), "
        f"with {'the shipped demo UNet' if networks.shipped else 'the UNet trained in stage 1'} {networks.unet}"
    )
    demo = dr2_demo(networks.unet, result.run_dir / "dr2", size, N=N, tau=tau)
    stage = None
    if networks.enhancer is None:
        progress(
            f"[quickstart] 3/4 DR2 outputs of {ENHANCER_FACES} degraded training faces (dr2-cache), then the tiny "
            f"enhancer (experiments/enhance_tiny.yaml at {size} px, folder mode, residual over DR2) trained on them"
        )
        stage = enhancer_stage(networks.unet, result.run_dir, size, enhance_overrides, N=N, tau=tau)
        networks = replace(networks, enhancer=stage.export_path)
    else:
        progress(f"[quickstart] 3/4 the shipped demo enhancer {networks.enhancer} (--from-scratch trains one here)")
    assert networks.enhancer is not None
    progress("[quickstart] 4/4 tiny benchmark (4x/8x x mild/severe): DR2 alone and DR2 + enhancer, as in the papers")
    testset = demo_testset(result.run_dir, size)
    evaluation = eval_demo(networks.unet, result.run_dir, testset, size, N=N, tau=tau)
    enhanced = eval_demo(networks.unet, result.run_dir, testset, size, enhancer=networks.enhancer, N=N, tau=tau)
    comparison = compare([evaluation.run_dir, enhanced.run_dir], out=result.run_dir / "compare")
    outputs = {
        "run directory": str(result.run_dir),
        f"sample grid (EMA, {cfg.sampling.method})": str(result.sample_grid),
        "loss curve": str(result.loss_curve),
        "exported UNet (trained here)": str(result.export_path),
        "UNet of DR2 (stages 2-4)": str(networks.unet),
        "DR2 grid (input|DR2|target)": demo["grid"],
    }
    if stage is not None:
        outputs["DR2 cache (enhancer inputs)"] = str(stage.cache.output)
        outputs["enhancer validation grid"] = str(stage.training.grid)
    outputs |= {
        "enhancer (stages 3-4)": str(networks.enhancer),
        "metrics, DR2 (results.json)": str(evaluation.run_dir / "results.json"),
        "metrics, DR2+enhancer": str(enhanced.run_dir / "results.json"),
        "report, DR2+enhancer (grids)": str(enhanced.report_html),
        "comparison (both rows)": str(next(f for f in comparison.files if f.suffix == ".html")),
    }
    return QuickstartResult(outputs, demo, evaluation, enhanced, comparison, networks, time.perf_counter() - start)
