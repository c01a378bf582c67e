"""Rebuild the quickstart's demo networks (experiments/quickstart_weights) with the project's own commands.

    python tools/make_quickstart_weights.py [--work runs/quickstart_weights] [--unet-steps 3000] [--faces 2048]
                                            [--enhancer-steps 600] [--out experiments/quickstart_weights]

1. `train quickstart` for --unet-steps (the quickstart's DDPM recipe, longer);
2. `eval` of DR2 on the quickstart's validation faces at tau 10/15/20 (N=4): the setting with the best mean
   PSNR there is the one the enhancer learns from and the quickstart runs (written to dr2_setting.json);
3. `dr2-cache` of --faces degraded training faces (the quickstart's `enhancer_training_faces`) at that setting;
4. `train-enhancer enhance_tiny` with the quickstart's enhancer recipe (`enhancer_recipe`) for --enhancer-steps;
5. `eval` of DR2 + that enhancer on the validation faces (printed: the numbers the choice was made on);
6. copy both exports, their sidecars, run_info.json and config.yaml files and dr2_setting.json into --out.

Each step runs as `python -m lightning_dr2 ...` in a subprocess, so every run_info.json records the command that
made it; a step whose output exists is skipped (rerun after an interruption). About 45 minutes on 2 CPU cores.
Never run by the tests or the quickstart: the quickstart only reads what this wrote.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

from omegaconf import OmegaConf

from lightning_dr2.config.loader import PROJECT_ROOT
from lightning_dr2.jobs import quickstart as qs
from lightning_dr2.jobs.dr2_cache import SAMPLE_DIR

SIZE = 32  # the quickstart's faces and networks (experiments/quickstart.yaml)
TAUS = (10, 15, 20)  # the sweep of step 2 (N = DR2_N)
# Beyond the quickstart's enhancer recipe: 1200 iterations average over about 200 of them (its 0.95 suits 200).
ENHANCER_EXTRA = ("ema.decay=0.995",)


def run(*args: str) -> None:
    """`python -m lightning_dr2 <args>`, failing loudly."""
    command = [sys.executable, "-m", "lightning_dr2", *args]
    print("+", " ".join(command), flush=True)
    subprocess.run(command, check=True, cwd=PROJECT_ROOT)


def evaluate(unet: Path, testset: Path, work: Path, run_name: str, settings: str, enhancer: Path | None) -> dict:
    """`eval` on the validation set, PSNR/SSIM (the quickstart's `eval_overrides` as a recipe in `work`); returns
    results.json."""
    out = work / "eval" / run_name
    if not (out / "results.json").is_file():
        recipe = work / "eval_validation.yaml"
        common = qs.eval_overrides(testset, SIZE, work, qs.VALIDATION_FACES, report_images=0)
        OmegaConf.save(OmegaConf.from_dotlist([*common, "metrics=[psnr,ssim]"]), recipe)
        run("eval", str(recipe), *qs.eval_networks(unet, enhancer), f"settings={settings}", f"run={run_name}")
    return json.loads((out / "results.json").read_text())


def mean_psnr(results: dict) -> dict[str, float]:
    """Mean PSNR over the splits, per setting label (results.json rows: "setting" is "input" or "N4_tau10"...)."""
    by_setting: dict[str, list[float]] = {}
    for row in results["results"]:
        by_setting.setdefault(str(row["setting"]), []).append(row["metrics"]["psnr"])
    return {setting: sum(v) / len(v) for setting, v in by_setting.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=PROJECT_ROOT / "runs" / "quickstart_weights")
    ap.add_argument("--out", type=Path, default=qs.SHIPPED_DIR)
    ap.add_argument("--unet-steps", type=int, default=3000)
    ap.add_argument("--faces", type=int, default=3584)  # 7 per cycle: 2048 x4_mild + 512 of each other split
    ap.add_argument("--enhancer-steps", type=int, default=1200)
    a = ap.parse_args()
    work = a.work.resolve()

    unet_run = work / "quickstart" / "unet"
    unet = unet_run / "export" / "unet_ema.pt"
    if not unet.is_file():
        run(
            "train",
            "quickstart",
            f"trainer.max_steps={a.unet_steps}",
            "trainer.val_check_interval=500",
            "checkpoint.every_n_steps=500",
            f"runs_dir={work}",
            "run=unet",
            "wandb.mode=disabled",
            "trainer.progress_bar=false",
        )

    validation = qs.validation_testset(work / "validation", SIZE)
    sweep = "[" + ", ".join(f"{{N: {qs.DR2_N}, tau: {tau}}}" for tau in TAUS) + "]"
    means = mean_psnr(evaluate(unet, validation, work, "sweep", sweep, None))
    print("validation mean PSNR per setting:", json.dumps(means, indent=1))
    best = max((s for s in means if s != "input"), key=means.__getitem__)
    tau = next(t for t in TAUS if best == f"N{qs.DR2_N}_tau{t}")
    setting = {"N": qs.DR2_N, "tau": tau, "chosen_on": "validation faces, best mean PSNR", "mean_psnr": means}
    (work / qs.SHIPPED_SETTING.name).write_text(json.dumps(setting, indent=1) + "\n")
    print(f"DR2 setting: (N, tau) = ({qs.DR2_N}, {tau})")

    stage_dir = work / "enhancer"
    hq, lq = qs.enhancer_training_faces(stage_dir, SIZE, a.faces)
    cache = stage_dir / "dr2_cache"
    run(
        "dr2-cache",
        "--hq",
        str(lq),
        "--out",
        str(cache),
        *qs.cache_overrides(unet, qs.DR2_N, tau),
        "progress_bar=false",
    )
    enhancer_run = work / "enhance_tiny" / "enhancer"
    enhancer = enhancer_run / "export" / "enhancer_ema.pt"
    if not enhancer.is_file():
        recipe = qs.enhancer_recipe(unet, hq, cache / SAMPLE_DIR, SIZE, work, qs.DR2_N, tau)
        steps = [
            f"trainer.max_steps={a.enhancer_steps}",
            f"trainer.val_check_interval={a.enhancer_steps}",
            f"checkpoint.every_n_steps={a.enhancer_steps}",
        ]
        run("train-enhancer", "enhance_tiny", *recipe, *ENHANCER_EXTRA, *steps, "trainer.progress_bar=false")
    enhanced = evaluate(unet, validation, work, "enhanced", qs.dr2_setting(qs.DR2_N, tau), enhancer)
    print("validation, DR2 + enhancer:", json.dumps(mean_psnr(enhanced)))

    a.out.mkdir(parents=True, exist_ok=True)
    copies = {
        unet: "unet_ema.pt",
        unet.with_suffix(".json"): "unet_ema.json",
        unet_run / "run_info.json": "unet_run_info.json",
        unet_run / "config.yaml": "unet_config.yaml",
        enhancer: "enhancer_ema.pt",
        enhancer.with_suffix(".json"): "enhancer_ema.json",
        enhancer_run / "run_info.json": "enhancer_run_info.json",
        enhancer_run / "config.yaml": "enhancer_config.yaml",
        cache / "run_info.json": "dr2_cache_run_info.json",
        work / qs.SHIPPED_SETTING.name: qs.SHIPPED_SETTING.name,
    }
    for source, name in copies.items():
        shutil.copyfile(source, a.out / name)
    print(f"wrote {len(copies)} files to {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
