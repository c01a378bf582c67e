"""`python -m lightning_dr2 eval experiments/eval_celeba_test.yaml ...`: the DR2 paper's evaluation.

For every set x split x (N, tau) setting: restore the LQ images with DR2 (+ enhancer) through the restore
job (multi-GPU, resumable: restored PNGs are reused), then score the saved PNGs against the ground truth
with the papers' protocols (`MetricSuite`) in a Lightning `test` run (each image once across ranks,
float64 metric states summed over ranks). Writes, under runs/<experiment>/<run>/:
  results.json, results.csv      one row per (set, split, setting): PSNR, SSIM, LPIPS, FID, Deg
  per_image.csv                  per-image PSNR, SSIM, LPIPS, Deg
  restored/<set>/<split>/<setting>/{restored,dr2}/...
  report.md + report/*.png       the metrics table and input | DR2 | output | GT grids
`reference=true` adds the papers' "Input" row: the LQ inputs themselves, scored the same way.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import Dataset
from torchvision.utils import save_image

from lightning_dr2.callbacks.writer import output_name
from lightning_dr2.config import (
    ConfigError,
    EvalConfig,
    RestoreConfig,
    load_config,
    resolve_run_name,
    run_dir,
    save_config,
)
from lightning_dr2.datasets.datamodule import ShardedData
from lightning_dr2.datasets.images import list_images
from lightning_dr2.dr2 import default_omega
from lightning_dr2.io import image_to_tensor, read_image, resize, write_table
from lightning_dr2.metrics.suite import MetricSuite
from lightning_dr2.restore import resolve_accelerator, run_restore

log = logging.getLogger(__name__)
INPUT_SETTING = "input"


def setting_name(N: int, tau: int, omega: int | None) -> str:  # noqa: N803
    return f"N{N}_tau{tau}" + ("" if omega is None else f"_omega{omega}")


def _to_tensor(path: Path) -> torch.Tensor:
    return image_to_tensor(read_image(path))


class ScoredImages(Dataset):
    """(prediction, ground truth or None, LQ input) files by relative name, read as [-1, 1] tensors."""

    def __init__(self, rows: list[tuple[str, Path, Path | None, Path]]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        name, pred, target, lq = self.rows[index]
        item = {"name": name, "pred": _to_tensor(pred), "lq": _to_tensor(lq)}
        if target is not None:
            item["target"] = _to_tensor(target)
        return item


class ScoreModule(pl.LightningModule):
    """test_step: update the metric suite; the epoch end computes the synced values and writes them to
    `out_dir` (per-image rows per rank, totals from rank 0): files, because under `ddp_spawn` the
    module that scored lives in another process."""

    def __init__(self, suite: MetricSuite, out_dir: Path) -> None:
        super().__init__()
        self.suite = suite
        self.out_dir = out_dir
        self.per_image: list[dict[str, Any]] = []
        self._resized = False

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        pred, target = batch["pred"], batch.get("target")
        if target is not None and pred.shape[-2:] != target.shape[-2:]:
            if not self._resized:
                log.warning(
                    "outputs are %s, ground truth %s: outputs resized (bicubic) to score them",
                    tuple(pred.shape[-2:]),
                    tuple(target.shape[-2:]),
                )
                self._resized = True
            pred = resize(pred, target.shape[-1]).clamp(-1, 1)
        values = self.suite.update(pred, target)
        for i, name in enumerate(batch["name"]):
            self.per_image.append({"name": name, **{k: float(v[i]) for k, v in values.items()}})

    def on_test_epoch_end(self) -> None:
        results = self.suite.compute()  # every rank takes part in the sync
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / f"per_image.rank{self.global_rank}.json").write_text(json.dumps(self.per_image))
        if self.trainer.is_global_zero:
            (self.out_dir / "scores.json").write_text(json.dumps(results))


def _collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"name": [it["name"] for it in items]}
    for key in ("pred", "target", "lq"):
        if key in items[0]:
            shapes = {tuple(it[key].shape) for it in items}
            if len(shapes) > 1:  # real LQ sets may mix sizes: bring them to the first one's
                size = items[0][key].shape[-1]
                out[key] = torch.stack([resize(it[key][None], size)[0] for it in items])
            else:
                out[key] = torch.stack([it[key] for it in items])
    return out


@dataclass
class EvalResult:
    run_dir: Path
    rows: list[dict[str, Any]]
    notes: dict[str, str]


def restore_config(cfg: DictConfig, input_dir: Path, output_dir: Path, setting: DictConfig, limit: int) -> DictConfig:
    """The restore job of one (split, setting): the eval config's pipeline keys + the setting + the folders."""
    base = OmegaConf.structured(RestoreConfig)
    shared = {k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k in base}
    rcfg = OmegaConf.merge(base, shared)
    rcfg.experiment = f"{cfg.experiment}/restore"
    rcfg.dr2.N, rcfg.dr2.tau, rcfg.dr2.omega = setting.N, setting.tau, setting.omega
    rcfg.input, rcfg.output, rcfg.limit, rcfg.comparison = str(input_dir), str(output_dir), limit, False
    return rcfg


def _splits(eval_set: DictConfig) -> list[tuple[str, Path, Path | None]]:
    """(split name, LQ folder, HQ folder or None) of a set."""
    root = Path(eval_set.root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"eval set '{eval_set.name}': folder {root} does not exist. Build it with "
            f"`python -m lightning_dr2 testset --hq <CelebA-HQ test images> --out {root} "
            "--spec experiments/testsets/celeba_test.yaml`, or point sets[].root at it."
        )
    if eval_set.kind == "real":
        return [("all", root, None)]
    if eval_set.kind != "paired":
        raise ConfigError(f"eval set '{eval_set.name}': kind must be 'paired' or 'real', got '{eval_set.kind}'")
    from lightning_dr2.datasets.testsets import list_splits

    available = list_splits(root)
    names = list(eval_set.splits) or available
    missing = [s for s in names if s not in available]
    if missing:
        raise ConfigError(f"eval set '{eval_set.name}' ({root}) has no splits {missing}; it has {available}")
    return [(s, root / s / "lq", root / "hq") for s in names]


def _score(
    cfg: DictConfig,
    rows: list[tuple[str, Path, Path | None, Path]],
    paired: bool,
    fid_reference: str | None,
    accelerator: str,
    out_dir: Path,
) -> tuple[dict[str, float], list[dict[str, Any]], dict]:
    suite = MetricSuite(
        list(cfg.metrics),
        paired=paired,
        fid_reference=fid_reference,
        lpips_net=cfg.lpips_net,
        skip_missing=cfg.skip_missing_weights,
        random_networks=cfg.random_metric_networks,
    )
    for old in out_dir.glob("per_image.rank*.json"):
        old.unlink()
    trainer = pl.Trainer(
        accelerator=accelerator,
        devices=cfg.devices,
        strategy=cfg.strategy,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
    )
    data = ShardedData(ScoredImages(rows), cfg.batch_size, cfg.num_workers, collate_fn=_collate)
    trainer.test(ScoreModule(suite, out_dir), datamodule=data, verbose=False)
    results = json.loads((out_dir / "scores.json").read_text())
    per_image = [row for part in sorted(out_dir.glob("per_image.rank*.json")) for row in json.loads(part.read_text())]
    return results, sorted(per_image, key=lambda r: r["name"]), suite.notes


def _grid(rows: list[tuple[str, Path, Path | None, Path]], dr2_dir: Path | None, out: Path, n: int) -> Path | None:
    """input | DR2 | output | GT rows for the first n images (at the output size)."""
    if n <= 0 or not rows:
        return None
    tiles = []
    for name, pred, target, lq in rows[:n]:
        p = _to_tensor(pred)
        size = p.shape[-1]
        row = [resize(_to_tensor(lq)[None], size)[0]]
        dr2 = dr2_dir / output_name(name) if dr2_dir is not None else None
        if dr2 is not None and dr2.is_file():
            row.append(resize(_to_tensor(dr2)[None], size)[0])
        row.append(p)
        if target is not None:
            row.append(resize(_to_tensor(target)[None], size)[0])
        tiles.append(torch.stack(row))
    width = max(t.shape[0] for t in tiles)
    tiles = [torch.cat([t, -torch.ones(width - t.shape[0], *t.shape[1:])]) for t in tiles]
    out.parent.mkdir(parents=True, exist_ok=True)
    save_image((torch.cat(tiles).clamp(-1, 1) + 1) / 2, out, nrow=width, padding=2)
    return out


def run_eval(cfg: DictConfig) -> EvalResult:
    start = time.perf_counter()
    cfg.run = resolve_run_name(cfg)
    path = run_dir(cfg)
    save_config(cfg, path / "config.yaml")
    accelerator = resolve_accelerator(cfg.accelerator)
    rows_out: list[dict[str, Any]] = []
    per_image_out: list[dict[str, Any]] = []
    notes: dict[str, str] = {}
    grids: list[tuple[str, Path]] = []
    for eval_set in cfg.sets:
        for split, lq_dir, hq_dir in _splits(eval_set):
            lq_files = list_images(lq_dir)
            if eval_set.limit:
                lq_files = lq_files[: eval_set.limit]
            rels = [f.relative_to(lq_dir).as_posix() for f in lq_files]
            jobs = [(INPUT_SETTING, None)] if cfg.reference else []
            jobs += [(setting_name(s.N, s.tau, s.omega), s) for s in cfg.settings]
            for name, setting in jobs:
                out = path / "restored" / eval_set.name / split / name
                if setting is None:
                    preds = {r: lq_dir / r for r in rels}
                    omega = None
                else:
                    summary = run_restore(restore_config(cfg, lq_dir, out, setting, eval_set.limit))
                    preds = {r: out / "restored" / output_name(r) for r in rels}
                    bad = {rel for rel, _ in summary.bad}
                    preds = {r: p for r, p in preds.items() if r not in bad and p.is_file()}
                    omega = (
                        setting.omega
                        if setting.omega is not None
                        else default_omega(setting.N, setting.tau, cfg.dr2.respacing)
                    )
                scored = [(r, p, hq_dir / r if hq_dir is not None else None, lq_dir / r) for r, p in preds.items()]
                if hq_dir is not None:
                    scored = [row for row in scored if row[2].is_file()]
                results, per_image, suite_notes = _score(
                    cfg, scored, hq_dir is not None, eval_set.fid_reference, accelerator, out / "scores"
                )
                notes.update(suite_notes)
                row = {
                    "set": eval_set.name,
                    "split": split,
                    "setting": name,
                    "N": getattr(setting, "N", None),
                    "tau": getattr(setting, "tau", None),
                    "omega": omega,
                    "n_images": len(scored),
                    "metrics": results,
                }
                rows_out.append(row)
                per_image_out += [{"set": eval_set.name, "split": split, "setting": name, **r} for r in per_image]
                grid = None
                if rank_zero_only.rank == 0:
                    grid = _grid(
                        scored,
                        out / "dr2" if setting is not None else None,
                        path / "report" / f"{eval_set.name}_{split}_{name}.png",
                        cfg.report_images,
                    )
                if grid is not None:
                    grids.append((f"{eval_set.name} / {split} / {name}", grid))
                log.info("%s/%s/%s: %s", eval_set.name, split, name, _fmt_metrics(results))
    if rank_zero_only.rank == 0:  # under DDP every rank runs this function; one writes the results
        _write_results(cfg, path, rows_out, per_image_out, notes, grids, time.perf_counter() - start)
        _log_wandb(cfg, path, rows_out, per_image_out)
    return EvalResult(path, rows_out, notes)


def _fmt_metrics(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.4g}" for k, v in metrics.items())


COLUMNS = ("psnr", "ssim", "lpips", "fid", "deg")
ARROWS = {"psnr": "↑", "ssim": "↑", "lpips": "↓", "fid": "↓", "deg": "↓"}


def metrics_table(rows: list[dict[str, Any]]) -> str:
    """The Markdown table of results (what the papers' tables show)."""
    present = [c for c in COLUMNS if any(c in r["metrics"] for r in rows)]
    header = "| set | split | setting | n | " + " | ".join(f"{c.upper()} {ARROWS[c]}" for c in present) + " |"
    lines = [header, "|" + "---|" * (4 + len(present))]
    for r in rows:
        cells = [_cell(r["metrics"].get(c)) for c in present]
        lines.append(f"| {r['set']} | {r['split']} | {r['setting']} | {r['n_images']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.4f}" if abs(value) < 10 else f"{value:.2f}"


def _write_results(
    cfg: DictConfig,
    path: Path,
    rows: list[dict[str, Any]],
    per_image: list[dict[str, Any]],
    notes: dict[str, str],
    grids: list[tuple[str, Path]],
    seconds: float,
) -> None:
    from lightning_dr2.loggers import wandb_run_id

    results = {
        "experiment": cfg.experiment,
        "run": cfg.run,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "wandb_id": wandb_run_id(cfg.experiment, str(cfg.run)),
        "tags": list(cfg.wandb.tags),
        "seconds": round(seconds, 1),
        "notes": notes,
        "config": OmegaConf.to_container(cfg, resolve=True),
        "results": rows,
    }
    (path / "results.json").write_text(json.dumps(results, indent=2))
    flat = [{k: v for k, v in r.items() if k != "metrics"} | r["metrics"] for r in rows]
    write_table(path / "results.csv", flat)
    write_table(path / "per_image.csv", per_image)
    lines = [f"# Evaluation {cfg.experiment} / {cfg.run}", "", metrics_table(rows), ""]
    if notes:
        lines += ["Notes:", *[f"- {k}: {v}" for k, v in notes.items()], ""]
    for title, grid in grids:
        lines += [
            f"## {title}",
            "",
            "input | DR2 | output | ground truth",
            "",
            f"![{title}]({grid.relative_to(path)})",
            "",
        ]
    (path / "report.md").write_text("\n".join(lines))


def _log_wandb(cfg: DictConfig, path: Path, rows: list[dict[str, Any]], per_image: list[dict[str, Any]]) -> None:
    """Metric keys eval/<set>/<split>/<metric> (with /<setting>/ when several settings are evaluated)."""
    from lightning_dr2.loggers import resolve_wandb_mode, wandb_run_kwargs

    mode = resolve_wandb_mode(cfg.wandb.mode)
    if mode == "disabled":
        return
    import wandb

    several = len({r["setting"] for r in rows}) > 1
    run = wandb.init(**wandb_run_kwargs(cfg, mode), dir=str(path))
    summary = {}
    for r in rows:
        key = f"eval/{r['set']}/{r['split']}" + (f"/{r['setting']}" if several else "")
        summary.update({f"{key}/{m}": v for m, v in r["metrics"].items()})
    run.log(summary)
    if per_image:
        columns = list(dict.fromkeys(k for row in per_image for k in row))
        run.log(
            {"eval/per_image": wandb.Table(columns=columns, data=[[row.get(c) for c in columns] for row in per_image])}
        )
    for grid in sorted((path / "report").glob("*.png")):
        run.log({f"eval/grids/{grid.stem}": wandb.Image(str(grid))})
    run.finish()


def eval_main(experiment: str | None, overrides: list[str]) -> int:
    cfg = load_config(experiment, overrides, schema=EvalConfig)
    result = run_eval(cfg)
    print(metrics_table(result.rows))
    for metric, note in result.notes.items():
        print(f"note: {metric}: {note}")
    print(f"\nresults: {result.run_dir / 'results.json'}  report: {result.run_dir / 'report.md'}")
    return 0
