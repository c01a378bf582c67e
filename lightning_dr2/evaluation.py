"""`python -m lightning_dr2 eval experiments/eval_celeba_test.yaml ...`: the DR2 paper's evaluation.

For every set x split x (N, tau) setting: restore the LQ images with DR2 (+ enhancer) through the restore
job (multi-GPU, resumable: restored PNGs are reused), then score the saved PNGs against the ground truth
with the papers' protocols (`MetricSuite`) in a Lightning `test` run (each image once across ranks,
float64 metric states summed over ranks). Writes, under runs/<experiment>/<run>/:
  results.json, results.csv      one row per (set, split, setting): PSNR, SSIM, LPIPS, FID, Deg
  per_image.csv                  per-image PSNR, SSIM, LPIPS, Deg
  restored/<set>/<split>/<setting>/{restored,dr2}/...
  report.md, report.html         the metrics table and input | DR2 | output | GT grids (report/*.png;
                                 the HTML embeds them and stands alone)
`reference=true` adds the papers' "Input" row: the LQ inputs themselves, scored the same way.
Scoring runs in `modules.scorer.ScoreModule`; tables and reports come from `lightning_dr2.report`.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import Dataset

from lightning_dr2.callbacks.writer import output_name
from lightning_dr2.config import RestoreConfig, resolve_run_name, run_dir, save_config
from lightning_dr2.datasets.datamodule import ShardedData
from lightning_dr2.datasets.eval_splits import eval_splits
from lightning_dr2.datasets.images import list_images
from lightning_dr2.dr2 import default_omega
from lightning_dr2.io import image_to_tensor, read_image, resize, write_table
from lightning_dr2.metrics.suite import MetricSuite, group_by_size
from lightning_dr2.modules.scorer import ScoreModule
from lightning_dr2.report import REFERENCE_SETTING, Figure, Row, Section, save_grid, setting_name, write_report
from lightning_dr2.restore import resolve_accelerator, run_restore

log = logging.getLogger(__name__)


def _to_tensor(path: Path) -> torch.Tensor:
    return image_to_tensor(read_image(path))


class ScoredImages(Dataset):
    """(prediction, ground truth or None) files by relative name, read as [-1, 1] tensors (rows also carry the
    LQ file, used by the report grids only)."""

    def __init__(self, rows: list[tuple[str, Path, Path | None, Path]]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        name, pred, target, _ = self.rows[index]
        item = {"name": name, "pred": _to_tensor(pred)}
        if target is not None:
            item["target"] = _to_tensor(target)
        return item


@dataclass
class EvalResult:
    """What `eval` produced: result rows (as in results.json), notes on skipped metrics, the report files."""

    run_dir: Path
    rows: list[dict[str, Any]]
    notes: dict[str, str]
    report_md: Path | None = None
    report_html: Path | None = None

    @property
    def table_rows(self) -> list[Row]:
        return [Row.from_result(r) for r in self.rows]


def restore_config(cfg: DictConfig, input_dir: Path, output_dir: Path, setting: DictConfig, limit: int) -> DictConfig:
    """The restore job of one (split, setting): the eval config's pipeline keys + the setting + the folders."""
    base = OmegaConf.structured(RestoreConfig)
    shared = {k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k in base}
    rcfg = OmegaConf.merge(base, shared)
    rcfg.experiment = f"{cfg.experiment}/restore"
    rcfg.dr2.N, rcfg.dr2.tau, rcfg.dr2.omega = setting.N, setting.tau, setting.omega
    rcfg.input, rcfg.output, rcfg.limit, rcfg.comparison = str(input_dir), str(output_dir), limit, False
    return rcfg


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
    data = ShardedData(ScoredImages(rows), cfg.batch_size, cfg.num_workers, collate_fn=group_by_size)
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
    return save_grid(torch.cat(tiles).clamp(-1, 1), out, nrow=width)


def run_eval(cfg: DictConfig) -> EvalResult:
    start = time.perf_counter()
    cfg.run = resolve_run_name(cfg)
    path = run_dir(cfg)
    save_config(cfg, path / "config.yaml")
    accelerator = resolve_accelerator(cfg.accelerator)
    rows_out: list[dict[str, Any]] = []
    per_image_out: list[dict[str, Any]] = []
    notes: dict[str, str] = {}
    grids: list[Figure] = []
    for eval_set in cfg.sets:
        for part in eval_splits(eval_set):
            split, lq_dir, hq_dir = part.name, part.lq_dir, part.hq_dir
            lq_files = list_images(lq_dir)
            if part.limit:
                lq_files = lq_files[: part.limit]
            rels = [f.relative_to(lq_dir).as_posix() for f in lq_files]
            jobs = [(REFERENCE_SETTING, None)] if cfg.reference else []
            jobs += [(setting_name(s.N, s.tau, s.omega), s) for s in cfg.settings]
            for name, setting in jobs:
                out = path / "restored" / part.set / split / name
                if setting is None:
                    preds = {r: lq_dir / r for r in rels}
                    omega = None
                else:
                    summary = run_restore(restore_config(cfg, lq_dir, out, setting, part.limit))
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
                    cfg, scored, part.paired, part.fid_reference, accelerator, out / "scores"
                )
                notes.update(suite_notes)
                row = {
                    "set": part.set,
                    "split": split,
                    "setting": name,
                    "N": getattr(setting, "N", None),
                    "tau": getattr(setting, "tau", None),
                    "omega": omega,
                    "n_images": len(scored),
                    "metrics": results,
                }
                rows_out.append(row)
                per_image_out += [{"set": part.set, "split": split, "setting": name, **r} for r in per_image]
                grid = None
                if rank_zero_only.rank == 0:
                    grid = _grid(
                        scored,
                        out / "dr2" if setting is not None else None,
                        path / "report" / f"{part.set}_{split}_{name}.png",
                        cfg.report_images,
                    )
                if grid is not None:
                    columns = ["input", "DR2", "output"] if setting is not None else ["input", "scored (the input)"]
                    caption = " | ".join(columns + (["ground truth"] if part.paired else []))
                    grids.append(Figure(f"{part.set} / {split} / {name}", grid, caption))
                log.info("%s/%s/%s: %s", part.set, split, name, _fmt_metrics(results))
    result = EvalResult(path, rows_out, notes)
    if rank_zero_only.rank == 0:  # under DDP every rank runs this function; one writes the results
        _write_results(cfg, path, rows_out, per_image_out, notes, time.perf_counter() - start)
        result.report_md, result.report_html = write_report(
            path,
            "report",
            f"Evaluation {cfg.experiment} / {cfg.run}",
            result.table_rows,
            sections=[Section("Notes", [f"{k}: {v}" for k, v in notes.items()])],
            figures=grids,
        )
        _log_wandb(cfg, path, rows_out, per_image_out)
    return result


def _fmt_metrics(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.4g}" for k, v in metrics.items())


def _write_results(
    cfg: DictConfig,
    path: Path,
    rows: list[dict[str, Any]],
    per_image: list[dict[str, Any]],
    notes: dict[str, str],
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
