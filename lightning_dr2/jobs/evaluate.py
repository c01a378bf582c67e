"""`python -m lightning_dr2 eval experiments/eval_celeba_test.yaml ...`: the DR2 paper's evaluation.

For every set x split x (N, tau) setting: restore the LQ images with DR2 (+ enhancer) through the restore
job (multi-GPU, resumable: restored PNGs are reused), then score the saved PNGs against the ground truth
with the papers' protocols (`MetricSuite`) in a Lightning `test` run (each image once across ranks,
float64 metric states summed over ranks). Writes, under runs/<experiment>/<run>/:
  results.json, results.csv      one row per (method, set, split, setting): PSNR, SSIM, LPIPS, FID, Deg
  per_image.csv                  per-image PSNR, SSIM, LPIPS, Deg (and sha256 of another method's files)
  restored/<set>/<split>/<setting>/{restored,dr2}/...
  report.md, report.html         the metrics table and input | DR2 | output | GT grids (report/*.png;
                                 the HTML embeds them and stands alone)
`reference=true` adds the papers' "Input" row: the LQ inputs themselves, scored the same way.
`predictions.<method>=DIR` adds other methods' restored images (GFPGAN, CodeFormer, ...), scored the same way
(`lightning_dr2.datasets.method_outputs` matches and checks them): one row per split named by `method`, its own W&B run.
`settings=[]` scores them without DR2 (no UNet is loaded).
Scoring runs in `modules.scorer.ScoreModule`; tables and reports come from `lightning_dr2.report`.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from lightning_dr2.callbacks.writer import MANIFEST as RESTORE_MANIFEST
from lightning_dr2.config.loader import ConfigError, open_run_dir, run_dir, save_config
from lightning_dr2.config.pipeline import RestoreConfig
from lightning_dr2.datasets.datamodule import ShardedData
from lightning_dr2.datasets.eval_splits import EvalSplit, SplitFiles, eval_splits, split_files
from lightning_dr2.datasets.method_outputs import find_predictions
from lightning_dr2.datasets.scored_images import ScoredImages
from lightning_dr2.dr2.pipeline import Networks, load_networks
from lightning_dr2.exports.restorer import restorer_name
from lightning_dr2.files import write_json, write_table
from lightning_dr2.image_io import output_name, read_image_tensor, resize
from lightning_dr2.jobs.predict_engine import resolve_accelerator
from lightning_dr2.jobs.restore import run_restore
from lightning_dr2.metrics.catalogue import column_order, format_value, metric_key, metric_of, title
from lightning_dr2.metrics.scoring import group_by_size
from lightning_dr2.metrics.suite import MetricSuite
from lightning_dr2.modules.scorer import ScoreModule
from lightning_dr2.provenance import fingerprint
from lightning_dr2.report import (
    REFERENCE_SETTING,
    Figure,
    Row,
    Section,
    metric_value,
    plot_ablation,
    save_grid,
    setting_name,
    write_report,
)
from lightning_dr2.runinfo import record_run_info
from lightning_dr2.weights import sha256sum

log = logging.getLogger(__name__)


@dataclass
class EvalResult:
    """What `eval` produced: result rows (as in results.json), notes on skipped metrics, the report files."""

    run_dir: Path
    rows: list[dict[str, Any]]
    notes: dict[str, str]
    missing: dict[str, int] = field(default_factory=dict)  # set/split -> images missing (allow_missing=true)
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
    for old in [*out_dir.glob("per_image.rank*.json"), out_dir / "scores.json"]:
        old.unlink(missing_ok=True)  # an earlier run's numbers are never read back as this run's
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
    _after_rank_zero()  # rank 0 writes the totals at the epoch's end
    results = json.loads((out_dir / "scores.json").read_text())
    per_image = [row for part in sorted(out_dir.glob("per_image.rank*.json")) for row in json.loads(part.read_text())]
    return results, sorted(per_image, key=lambda r: r["name"]), suite.notes


Scored = tuple[str, Path, Path | None, Path]  # (name, restored output, ground truth or None, LQ input)


def _grid(rows: list[Scored], dr2_dir: Path | None, out: Path, n: int) -> Path | None:
    """input | DR2 | output | GT rows for the first n images (at the output size)."""
    return _grid_of([(row, dr2_dir) for row in rows[:n]], out) if n > 0 and rows else None


def _grid_of(rows: list[tuple[Scored, Path | None]], out: Path) -> Path:
    """One input | DR2 | output | GT row per (scored image, its DR2 folder or None), at the first output's size
    (another method's outputs may differ in size from image to image)."""
    tiles = []
    size = read_image_tensor(rows[0][0][1]).shape[-1]
    for (name, pred, target, lq), dr2_dir in rows:
        p = resize(read_image_tensor(pred)[None], size)[0]
        row = [resize(read_image_tensor(lq)[None], size)[0]]
        dr2 = dr2_dir / output_name(name) if dr2_dir is not None else None
        if dr2 is not None and dr2.is_file():
            row.append(resize(read_image_tensor(dr2)[None], size)[0])
        row.append(p)
        if target is not None:
            row.append(resize(read_image_tensor(target)[None], size)[0])
        tiles.append(torch.stack(row))
    width = max(t.shape[0] for t in tiles)
    tiles = [torch.cat([t, -torch.ones(width - t.shape[0], *t.shape[1:])]) for t in tiles]
    return save_grid(torch.cat(tiles).clamp(-1, 1), out, nrow=width)


def _worst_images(
    per_image: list[dict[str, Any]],
    scored: dict[tuple[str, str, str, str, str], tuple[Scored, Path | None]],
    out_dir: Path,
    k: int,
) -> list[Figure]:
    """Per metric with per-image values, the k worst images of the run (restored ones; the input reference
    rows are baselines): where to look first when a number disappoints."""
    if k <= 0:
        return []
    restored = [r for r in per_image if r["setting"] != REFERENCE_SETTING]
    figures = []
    for metric in column_order({key for r in restored for key in r if metric_of(key) is not None}):
        values = [r for r in restored if metric_value(r.get(metric)) is not None]
        if not values:
            continue
        worst_first = sorted(values, key=lambda r: r[metric], reverse=not metric_of(metric).higher_is_better)
        chosen = worst_first[:k]
        keys = [(r["set"], r["split"], r["method"], r["setting"], r["name"]) for r in chosen]
        grid = _grid_of([scored[key] for key in keys], out_dir / f"worst_{metric}.png")
        labels = ["/".join((s, split, setting or method, name)) for s, split, method, setting, name in keys]
        ranked = enumerate(zip(labels, chosen, strict=True), start=1)
        caption = "; ".join(f"{i}. {label} {format_value(metric, r[metric])}" for i, (label, r) in ranked)
        caption = f"input | DR2 | output | GT rows: {caption}"
        figures.append(Figure(f"Worst {len(chosen)} by {title(metric)}", grid, caption))
    return figures


def _after_rank_zero() -> None:
    """Under torchrun/srun every rank runs `eval`; rank 0 merges a restore job's manifest after predict, and
    every rank reads it next: wait for it (nothing to wait for in one process or under ddp_spawn)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def verified_outputs(out: Path, rels: list[str]) -> tuple[dict[str, Path], dict[str, Any], dict[str, str]]:
    """(restored file by input name, restore settings, input sha256 by name) for the outputs whose manifest
    record says they were made, without a flag, by the settings the restore job just recorded (the job
    recomputes any other): a restored file is scored only when its fingerprint says this run made it."""
    manifest = json.loads((out / RESTORE_MANIFEST).read_text())
    settings, records = manifest["settings"], {r["name"]: r for r in manifest["images"]}
    preds, inputs = {}, {}
    for rel in rels:
        record = records.get(rel, {})
        expected = fingerprint({**settings, "input_sha256": record.get("input_sha256")})
        path = out / "restored" / output_name(rel)
        if record.get("status") == "ok" and record.get("fingerprint") == expected and path.is_file():
            preds[rel], inputs[rel] = path, record["input_sha256"]
    return preds, settings, inputs


def default_method(cfg: DictConfig) -> str:
    """What the run evaluates, as W&B's `method` field and the results' label: DR2 + the enhancer that runs (the
    one the settings name: a train-enhancer export's JSON picks it, as `load_restorer` does).
    Without DR2 settings nothing of DR2 runs: the run's own rows (reference=true) are the inputs, "Input"."""
    if "settings" in cfg and len(cfg.settings) == 0:
        return "Input"
    if cfg.enhancer.name == "none":
        return "DR2"
    return f"DR2+{restorer_name(cfg.enhancer.name, cfg.enhancer.weights)}"


@dataclass
class _Collected:
    """What eval gathers over (set, split, method/setting): result and per-image rows, metric notes, the
    report's grids by method (each method's W&B run logs its own), and every scored image for the worst-k."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    per_image: list[dict[str, Any]] = field(default_factory=list)
    notes: dict[str, str] = field(default_factory=dict)
    grids: dict[str, list[Figure]] = field(default_factory=dict)
    scored: dict[tuple[str, str, str, str, str], tuple[Scored, Path | None]] = field(default_factory=dict)


@dataclass
class _Job:
    """One row to score: whose images (method; DR2's setting, or "" for another method's), from where."""

    method: str
    setting: str
    preds: dict[str, Path]
    out: Path  # scores/ goes here
    dr2_dir: Path | None  # DR2's intermediate outputs, shown in the grids
    dr2: dict[str, Any]  # N, tau, omega (None for rows DR2 did not make)
    counts: dict[str, int]  # missing, failed, unlisted
    provenance: dict[str, Any]
    hashes: dict[str, str] | None = None  # per-image sha256 of another method's files (per_image.csv)


def _score_job(cfg: DictConfig, part: EvalSplit, job: _Job, accelerator: str, path: Path, got: _Collected) -> None:
    hq = part.hq_dir
    scored = [(r, p, hq / r if hq is not None else None, part.lq_dir / r) for r, p in job.preds.items()]
    results, per_image, suite_notes = _score(
        cfg, scored, part.paired, part.fid_reference, accelerator, job.out / "scores"
    )
    got.notes.update(suite_notes)
    got.rows.append(
        {
            "method": job.method,
            "set": part.set,
            "split": part.name,
            "setting": job.setting,
            **job.dr2,
            "n_images": len(scored),
            **job.counts,
            "provenance": job.provenance,
            "metrics": results,
        }
    )
    labels = {"set": part.set, "split": part.name, "method": job.method, "setting": job.setting}
    hashes = job.hashes or {}
    got.per_image += [labels | r | ({"sha256": hashes[r["name"]]} if hashes else {}) for r in per_image]
    got.scored.update({(part.set, part.name, job.method, job.setting, r[0]): (r, job.dr2_dir) for r in scored})
    external = job.method != cfg.method  # another method's grids go to report/<method>/
    grid_name = f"{job.method}/{part.set}_{part.name}.png" if external else f"{part.set}_{part.name}_{job.setting}.png"
    grid_file = path / "report" / grid_name
    grid = _grid(scored, job.dr2_dir, grid_file, cfg.report_images) if rank_zero_only.rank == 0 else None
    if grid is not None:
        if external:
            columns = ["input", job.method]
        else:
            columns = ["input", "DR2", "output"] if job.dr2_dir is not None else ["input", "scored (the input)"]
        caption = " | ".join(columns + (["ground truth"] if part.paired else []))
        title = f"{part.set} / {part.name} / {job.method if external else job.setting}"
        got.grids.setdefault(job.method, []).append(Figure(title, grid, caption))
    log.info("%s/%s/%s: %s", part.set, part.name, job.setting or job.method, _fmt_metrics(results))


def _dr2_jobs(
    cfg: DictConfig, part: EvalSplit, files: SplitFiles, path: Path, scoring: dict, networks: Networks | None
) -> Iterator[_Job]:
    """The input reference row (reference=true) and one row per DR2 (N, tau) setting, restoring as needed with
    the networks the run loaded once."""
    jobs = [(REFERENCE_SETTING, None)] if cfg.reference else []
    jobs += [(setting_name(s.N, s.tau, s.omega), s) for s in cfg.settings]
    for name, setting in jobs:
        out = path / "restored" / part.set / part.name / name
        if setting is None:
            preds = {r: part.lq_dir / r for r in files.rels}
            inputs = {r: sha256sum(p) for r, p in preds.items()}
            settings, omega = None, None
        else:
            run_restore(restore_config(cfg, part.lq_dir, out, setting, files.input_limit), networks=networks)
            _after_rank_zero()
            preds, settings, inputs = verified_outputs(out, files.rels)
            omega = settings["omega"]
        provenance = {"fingerprint": fingerprint({"restore": settings, "inputs": inputs, "scoring": scoring})}
        if settings is not None:
            provenance["restore_fingerprint"] = fingerprint(settings)
            provenance |= {k: settings[k] for k in ("unet_sha256", "enhancer_sha256")}
        counts = {
            "missing": len(files.missing),  # listed, but a file is missing (allow_missing=true)
            "failed": len(files.rels) - len(preds),  # the restore job could not use or flagged it
            "unlisted": len(files.unlisted),  # on disk, not in the set's manifest: not scored
        }
        dr2 = {"N": getattr(setting, "N", None), "tau": getattr(setting, "tau", None), "omega": omega}
        yield _Job(cfg.method, name, preds, out, out / "dr2" if setting is not None else None, dr2, counts, provenance)


def _prediction_jobs(
    cfg: DictConfig, part: EvalSplit, files: SplitFiles, path: Path, scoring: dict, gaps: list[str]
) -> Iterator[_Job]:
    """One row per `predictions.<method>` folder: its files for this split, scored like DR2's outputs; what
    allow_missing let through is added to `gaps` (report lines)."""
    for method, root in cfg.predictions.items():
        found = find_predictions(method, Path(root), part, files, len(cfg.sets) > 1, cfg.allow_missing)
        if found.missing or found.unmatched:
            counts = f"{len(found.missing)} missing, {len(found.unmatched)} unmatched file(s)"
            gaps.append(f"{part.set}/{part.name} {method}: {counts}")
        if not found.files:
            log.warning("%s/%s: no prediction of %s to score (allow_missing=true)", part.set, part.name, method)
            continue
        hashes = {r: sha256sum(p) for r, p in found.files.items()}
        provenance = {
            "predictions": str(found.folder.resolve()),
            "fingerprint": fingerprint({"predictions": hashes, "scoring": scoring}),
        }
        counts = {
            "missing": len(files.missing) + len(found.missing),  # the set's missing files + the method's
            "failed": 0,
            "unlisted": len(found.unmatched),  # files that match no image of the split: not scored
        }
        dr2 = {"N": None, "tau": None, "omega": None}
        out = path / "predictions" / method / part.set / part.name
        yield _Job(method, "", found.files, out, None, dr2, counts, provenance, hashes)


def run_eval(cfg: DictConfig) -> EvalResult:
    start = time.perf_counter()
    cfg.method = cfg.method or default_method(cfg)
    if cfg.method in cfg.predictions:
        raise ConfigError(
            f"predictions.{cfg.method} has the name of this run's own rows (method={cfg.method}): rename one"
        )
    path = open_run_dir(cfg)
    if rank_zero_only.rank == 0:
        if (path / "results.json").is_file():
            log.warning("%s holds an earlier evaluation: its results are replaced (restored images are reused)", path)
        save_config(cfg, path / "config.yaml")
        record_run_info(path)
    accelerator = resolve_accelerator(cfg.accelerator)
    got = _Collected()
    gaps: list[str] = []  # predictions not scored (allow_missing=true), for the report
    missing: dict[str, int] = {}  # set/split -> listed images not scored because a file is missing
    missing_splits: list[str] = []
    scoring = {
        "metrics": list(cfg.metrics),
        "lpips_net": cfg.lpips_net,
        "random_metric_networks": cfg.random_metric_networks,
    }
    splits: list[tuple[EvalSplit, SplitFiles, list[_Job]]] = []
    for eval_set in cfg.sets:
        for part in eval_splits(eval_set, cfg.allow_missing):
            files = split_files(part, cfg.allow_missing)
            key = f"{part.set}/{part.name}"
            if files.missing or not part.present:
                missing[key] = len(files.missing)
            if not part.present:
                log.warning("%s: split missing (allow_missing=true); not evaluated", key)
                missing_splits.append(key)
                continue
            if not files.rels:
                log.warning("%s: no image left to score (%d missing)", key, len(files.missing))
                continue
            # every method's folder is checked before DR2 restores anything: a bad layout fails in seconds
            splits.append((part, files, list(_prediction_jobs(cfg, part, files, path, scoring, gaps))))
    # The UNet and enhancer, loaded once for every split and setting (none when DR2 restores nothing), after the
    # output location and every method's folder were checked.
    networks = load_networks(cfg) if cfg.settings and splits else None
    for part, files, predicted in splits:
        for job in itertools.chain(_dr2_jobs(cfg, part, files, path, scoring, networks), predicted):
            _score_job(cfg, part, job, accelerator, path, got)
    result = EvalResult(path, got.rows, got.notes, missing)
    if rank_zero_only.rank == 0:  # under DDP every rank runs this function; one writes the results
        _write_results(cfg, path, got.rows, got.per_image, got.notes, missing, time.perf_counter() - start)
        lines = [f"{k}: split missing" if k in missing_splits else f"{k}: {n} image(s)" for k, n in missing.items()]
        sections = [Section("Notes", [f"{k}: {v}" for k, v in got.notes.items()])]
        if missing:
            sections.append(Section("Missing inputs (allow_missing=true: not scored)", lines))
        if gaps:
            sections.append(Section("Predictions not scored (allow_missing=true)", gaps))
        worst = _worst_images(got.per_image, got.scored, path / "report", cfg.report_worst)
        dr2_figures = plot_ablation(got.rows, path / "report") + got.grids.get(cfg.method, []) + worst
        figures = dr2_figures + [f for method in cfg.predictions for f in got.grids.get(method, [])]
        result.report_md, result.report_html = write_report(
            path,
            "report",
            f"Evaluation {cfg.experiment} / {cfg.run}",
            result.table_rows,
            sections=sections,
            figures=figures,
        )
        grids = {method: [f.path for f in got.grids.get(method, [])] for method in cfg.predictions}
        _log_wandb(cfg, path, got.rows, got.per_image, {cfg.method: [f.path for f in dr2_figures], **grids})
    return result


def _fmt_metrics(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.4g}" for k, v in metrics.items())


def _write_results(
    cfg: DictConfig,
    path: Path,
    rows: list[dict[str, Any]],
    per_image: list[dict[str, Any]],
    notes: dict[str, str],
    missing: dict[str, int],
    seconds: float,
) -> None:
    from lightning_dr2.loggers import wandb_run_id

    results = {
        "experiment": cfg.experiment,
        "run": cfg.run,
        "method": cfg.method,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "wandb_id": wandb_run_id(cfg.experiment, str(cfg.run)),
        "wandb_ids": {
            m: wandb_run_id(cfg.experiment, method_run(cfg, m)) for m in dict.fromkeys(r["method"] for r in rows)
        },
        "tags": list(cfg.wandb.tags),
        "seconds": round(seconds, 1),
        "notes": notes,
        "missing": missing,  # set/split -> listed images not scored because a file is missing
        "config": OmegaConf.to_container(cfg, resolve=True),
        "results": rows,
    }
    write_json(path / "results.json", results)
    nested = ("metrics", "provenance")
    flat = [{k: v for k, v in r.items() if k not in nested} | r["provenance"] | r["metrics"] for r in rows]
    write_table(path / "results.csv", flat)
    write_table(path / "per_image.csv", per_image)


def method_run(cfg: DictConfig, method: str) -> str:
    """The run part of a method's W&B name and id: this run for its own rows, `<run>-<method>` for another
    method's (its own W&B run, same project and group, so W&B's run table lines them up)."""
    return str(cfg.run) if method == cfg.method else f"{cfg.run}-{method}"


# Config keys that describe how DR2 made its outputs: another method's run leaves them out, so W&B's run
# table and parallel coordinates never show DR2's UNet or (N, tau) against GFPGAN's numbers.
DR2_ONLY_KEYS = frozenset(
    {
        "unet_weights",
        "net",
        "diffusion",
        "dr2",
        "enhancer",
        "sweep",
        "dtype",
        "compile",
        "channels_last",
        "input_policy",
    }
)


def method_run_kwargs(cfg: DictConfig, mode: str, method: str) -> dict[str, Any]:
    """`wandb.init` arguments of one method's run: the eval run's, renamed for another method, whose config
    says `method=<method>`, has no DR2 keys (`DR2_ONLY_KEYS`, no settings) and only its own predictions folder."""
    from lightning_dr2.loggers import wandb_run_id, wandb_run_kwargs

    kwargs = {**wandb_run_kwargs(cfg, mode), "dir": str(run_dir(cfg))}
    if method != cfg.method:
        run = method_run(cfg, method)
        config = {
            k: v
            for k, v in kwargs["config"].items()
            if not k.startswith("predictions.") and k.split(".")[0] not in DR2_ONLY_KEYS
        }
        config |= {"method": method, "settings": [], f"predictions.{method}": cfg.predictions[method]}
        kwargs |= {"name": f"{cfg.experiment}/{run}", "id": wandb_run_id(cfg.experiment, run), "config": config}
    return kwargs


def _log_wandb(
    cfg: DictConfig,
    path: Path,
    rows: list[dict[str, Any]],
    per_image: list[dict[str, Any]],
    grids: dict[str, list[Path]],
) -> None:
    """One W&B run per method (DR2's rows, each `predictions.<method>`): metric keys eval/<set>/<split>/<metric>
    (with /<setting>/ when a run has several settings), its per-image table and grids."""
    from lightning_dr2.loggers import resolve_wandb_mode, start_with_offline_fallback

    mode = resolve_wandb_mode(cfg.wandb.mode)
    if mode == "disabled":
        return
    import wandb

    for method in dict.fromkeys(r["method"] for r in rows):
        own = [r for r in rows if r["method"] == method]
        several = len({r["setting"] for r in own}) > 1
        kwargs = method_run_kwargs(cfg, mode, method)
        run = start_with_offline_fallback(lambda kwargs=kwargs: wandb.init(**kwargs), kwargs)
        mode = kwargs["mode"]  # once online failed, the next methods' runs start offline without waiting again
        summary = {}
        for r in own:
            setting = r["setting"] if several else ""
            summary.update({metric_key(r["set"], r["split"], m, setting): v for m, v in r["metrics"].items()})
        run.log(summary)
        images = [row for row in per_image if row["method"] == method]
        if images:
            columns = list(dict.fromkeys(k for row in images for k in row))
            table = wandb.Table(columns=columns, data=[[row.get(c) for c in columns] for row in images])
            run.log({"eval/per_image": table})
        for grid in grids.get(method, []):  # this run's grids only: report/ may hold an earlier run's
            run.log({f"eval/grids/{grid.stem}": wandb.Image(str(grid))})
        run.finish()
