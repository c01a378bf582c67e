"""`python -m lightning_dr2 compare`: put evaluation runs side by side (Markdown, CSV, PNG).

Runs come from local run directories (their `results.json`, written by `eval`) or from a W&B project
(the `eval/<set>/<split>[/<setting>]/<metric>` summary keys the framework logs). Both are turned into
the same rows, so a table can mix runs that were synced to W&B with runs that only exist on disk. Tables
and reports come from the shared report writer (`lightning_dr2.report`), metric metadata from the catalogue.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightning_dr2.metrics.catalogue import METRICS, header, metric_of, parse_metric_key
from lightning_dr2.outputs import check_output_location
from lightning_dr2.published import load_published, published_path
from lightning_dr2.report import (
    REFERENCE_SETTING,
    Figure,
    Row,
    Section,
    metric_value,
    metrics_table,
    present_columns,
    setting_name,
    write_report,
)

DEFAULT_OUT = "runs/compare"
RESULTS_FILE = "results.json"


class CompareError(ValueError):
    """Bad input for `compare`; the message names the path, key or option at fault and how to fix it."""


@dataclass
class RunResults:
    """All entries of one run, with where they came from (a file or a W&B run) for labels and messages."""

    label: str
    source: str
    disambiguator: str  # appended to the label when two runs would otherwise share it
    entries: list[Row]


@dataclass
class Comparison:
    """What `compare` produced: the ordered rows (each naming its run), the metric columns, the Markdown table
    and the files written."""

    rows: list[Row]
    metrics: list[str]
    markdown: str
    runs: list[RunResults]
    files: list[Path] = field(default_factory=list)


# --------------------------------------------------------------------------------------------- metrics


def parse_metrics(metrics: Sequence[str] | None) -> list[str] | None:
    """Validate metric names early, before any file is read, so a typo fails fast with the valid names.

    A name is a catalogue metric (`fid` stands for every FID column) or a result key such as `fid_ffhq512`."""
    if metrics is None:
        return None
    chosen: list[str] = []
    for name in metrics:
        for part in str(name).split(","):  # accept "psnr,ssim" as well as "psnr ssim"
            key = part.strip().lower()
            if not key:
                continue
            if metric_of(key) is None:
                raise CompareError(f"unknown metric '{part.strip()}'; valid metrics: {', '.join(METRICS)}")
            if key not in chosen:
                chosen.append(key)
    if not chosen:
        raise CompareError(f"no metric given; valid metrics: {', '.join(METRICS)}")
    return chosen


# ------------------------------------------------------------------------------------------ local runs


def find_results(paths: Iterable[str | Path]) -> list[Path]:
    """Every results.json the given paths stand for: the file itself, a run dir, or a folder of run dirs."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if not path.exists():
            raise CompareError(f"{path} does not exist (expected a run dir, its {RESULTS_FILE}, or a folder of runs)")
        if path.is_file():
            hits = [path]
        elif (path / RESULTS_FILE).is_file():
            hits = [path / RESULTS_FILE]
        else:
            hits = sorted(p for p in path.rglob(RESULTS_FILE) if p.is_file())
            if not hits:
                raise CompareError(
                    f"no {RESULTS_FILE} in {path} or below it; run `python -m lightning_dr2 eval ...` first "
                    f"or pass a run dir such as runs/<experiment>/<run>"
                )
        for hit in hits:
            if hit.resolve() not in {f.resolve() for f in found}:
                found.append(hit)
    return found


def load_results(path: str | Path) -> RunResults:
    """Read one results.json; every structural problem is reported with the file and the offending key."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise CompareError(f"{path} is not valid JSON: {err.msg} (line {err.lineno}, column {err.colno})") from err
    except (OSError, UnicodeDecodeError) as err:
        raise CompareError(f"cannot read {path}: {err}") from err
    if not isinstance(data, dict):
        raise CompareError(f"{path}: expected a JSON object at the top level, got {type(data).__name__}")
    results = data.get("results")
    if not isinstance(results, list):
        found = "missing" if results is None else f"a {type(results).__name__}"
        raise CompareError(f"{path}: 'results' must be a list of entries, it is {found}")

    # Rows name their method; results written before they did carry the run's one method at the top.
    method = str(data.get("method") or "")
    entries = [_entry(item, f"{path}: results[{i}]", method) for i, item in enumerate(results)]
    # runs/<experiment>/<run>/results.json: the folders name the run when the file does not.
    experiment = str(data.get("experiment") or path.parent.parent.name or "run")
    run = str(data.get("run") or path.parent.name)
    return RunResults(label=f"{experiment}/{run}", source=str(path), disambiguator=path.parent.name, entries=entries)


def _entry(item: Any, where: str, method: str = "") -> Row:
    if not isinstance(item, dict):
        raise CompareError(f"{where} must be an object, got {type(item).__name__}")
    for key in ("set", "split"):
        if not isinstance(item.get(key), str) or not item[key]:
            raise CompareError(f"{where} has no '{key}' (a non-empty string)")
    setting = item.get("setting")
    if setting is None:
        setting = setting_name(item["N"], item["tau"]) if "N" in item and "tau" in item else ""
    raw_metrics = item.get("metrics") or {}
    if not isinstance(raw_metrics, dict):
        raise CompareError(f"{where}: 'metrics' must be an object, got {type(raw_metrics).__name__}")
    metrics: dict[str, float | None] = {}
    for key, value in raw_metrics.items():
        name = str(key).lower()
        if metric_of(name) is None:
            continue  # extra diagnostics such as deg_identical are not comparison columns
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise CompareError(f"{where}: metric '{key}' must be a number or null, got {value!r}")
        metrics[name] = metric_value(value)
    n_images = item.get("n_images")
    return Row(
        set=item["set"],
        split=item["split"],
        setting=str(setting),
        metrics=metrics,
        n_images=n_images if isinstance(n_images, int) and not isinstance(n_images, bool) else None,
        method=str(item.get("method") or method),
    )


def load_local_runs(paths: Iterable[str | Path]) -> list[RunResults]:
    return [load_results(p) for p in find_results(paths)]


# -------------------------------------------------------------------------------------------- W&B runs


def load_wandb_runs(project: str, filters: dict[str, Any] | None = None) -> list[RunResults]:
    """Runs of a W&B project that logged `eval/...` summary keys, as the same rows as local results.

    Reading needs credentials and network; both failures become one message that says how to log in or
    how to compare the local run dirs instead (every eval run also writes results.json).
    """
    project = project.strip().strip("/")
    if not project or project.count("/") > 1:
        raise CompareError(f"--wandb-project must look like ENTITY/PROJECT (or PROJECT), got '{project}'")
    try:
        import wandb
    except ImportError as err:  # pragma: no cover - wandb is a dependency
        raise CompareError("wandb is not installed: pip install wandb, or compare local run dirs") from err

    try:
        api = wandb.Api()
        runs = [_wandb_run(run, project) for run in api.runs(project, filters=filters)]
    except CompareError:
        raise
    except Exception as err:
        raise CompareError(
            f"cannot read W&B project '{project}': {type(err).__name__}: {err}\n"
            "Log in with `wandb login` (or set WANDB_API_KEY) on a machine with network access, or compare "
            "local run dirs instead: python -m lightning_dr2 compare runs/<experiment>/<run> ..."
        ) from err
    found = [run for run in runs if run.entries]
    if not found:
        raise CompareError(
            f"no run in W&B project '{project}' has eval/<set>/<split>/<metric> summary keys "
            f"(checked {len(runs)} run(s)); offline runs need `wandb sync runs/<experiment>/<run>/wandb/offline-run-*`"
        )
    return found


def _flatten(mapping: Any, prefix: str = "") -> dict[str, Any]:
    """W&B keeps `a/b/c` keys flat, but a dict logged under `eval` shows up nested: accept both."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        # duck-typed: the public API hands out nested summary values as dict-like SummarySubDict objects
        if hasattr(value, "items") and not str(key).startswith("_"):
            flat.update(_flatten(value, f"{name}/"))
        else:
            flat[name] = value
    return flat


def _config_value(config: Mapping[str, Any] | None, key: str) -> Any:
    value = (config or {}).get(key)
    if isinstance(value, Mapping) and "value" in value:  # raw W&B config form {"value": ...}
        return value["value"]
    return value


def _config_setting(config: Mapping[str, Any] | None) -> str:
    """The setting a key without a setting level refers to: the run's only (N, tau) setting, when its config
    says so."""
    settings = _config_value(config, "settings")
    if isinstance(settings, list) and len(settings) == 1 and isinstance(settings[0], Mapping):
        only = settings[0]
        if "N" in only and "tau" in only:
            return setting_name(only["N"], only["tau"], only.get("omega"))  # as eval names it
    return ""


def _wandb_run(run: Any, project: str) -> RunResults:
    summary = run.summary
    items = summary.items() if hasattr(summary, "items") else dict(summary).items()
    flat = _flatten(dict(items))
    config = getattr(run, "config", None)
    default_setting = _config_setting(config)
    method = str(_config_value(config, "method") or "")  # eval logs one run per method (DR2, each predictions.*)

    grouped: dict[tuple[str, str, str], dict[str, float | None]] = {}
    for key, value in flat.items():
        try:
            parsed = parse_metric_key(str(key))
        except ValueError:
            continue  # W&B's own keys, eval/per_image, eval/grids/...
        metric = parsed.metric.lower()
        if metric_of(metric) is None:
            continue  # diagnostics such as deg_identical are not comparison columns
        setting = parsed.setting or default_setting
        grouped.setdefault((parsed.set, parsed.split, setting), {})[metric] = metric_value(value)
    entries = [Row(set=s, split=sp, setting=st, metrics=m, method=method) for (s, sp, st), m in grouped.items()]

    # The framework names runs `<experiment>/<run>` with group = experiment: keep that as the label, so a
    # W&B run reads the same as its local run dir; otherwise prefix the group.
    name = str(getattr(run, "name", "") or getattr(run, "id", "run"))
    group = getattr(run, "group", None)
    label = name if not group or name.startswith(f"{group}/") else f"{group}/{name}"
    run_id = str(getattr(run, "id", name))
    return RunResults(label=label, source=f"wandb:{project}/{run_id}", disambiguator=f"wandb:{run_id}", entries=entries)


# ------------------------------------------------------------------------------------------------ table


def unique_labels(runs: list[RunResults]) -> None:
    """Make labels unique in place: a collision gets the folder (or W&B id), then a counter if still equal."""
    counts: dict[str, int] = {}
    for run in runs:
        counts[run.label] = counts.get(run.label, 0) + 1
    for run in runs:
        if counts[run.label] > 1:
            run.label = f"{run.label} ({run.disambiguator})"
    seen: dict[str, int] = {}
    for run in runs:
        seen[run.label] = seen.get(run.label, 0) + 1
        if seen[run.label] > 1:
            run.label = f"{run.label} #{seen[run.label]}"


def ordered_rows(runs: list[RunResults]) -> list[Row]:
    """Rows grouped by set, then split (first-seen order), runs in the order given: groups read as blocks.
    Each row is named by its run's (unique) label."""
    groups: dict[tuple[str, str], list[Row]] = {}
    set_order: dict[str, int] = {}
    for run in runs:
        for entry in run.entries:
            entry.run = run.label
            set_order.setdefault(entry.set, len(set_order))
            groups.setdefault((entry.set, entry.split), []).append(entry)
    keys = sorted(groups, key=lambda key: set_order[key[0]])  # stable: splits keep first-seen order in a set
    return [row for key in keys for row in groups[key]]


def select_columns(chosen: Sequence[str], rows: Sequence[Row]) -> list[str]:
    """Result keys for the chosen metrics, in the order asked: `fid` expands to every FID column present."""
    present = {k for r in rows for k in r.metrics}
    columns: list[str] = []
    for name in chosen:
        keys = [name] if name in present else sorted(k for k in present if metric_of(k).name == name)  # type: ignore[union-attr]
        columns += [k for k in keys or [name] if k not in columns]
    return columns


def write_csv(rows: Sequence[Row], metrics: Sequence[str], path: Path) -> Path:
    """Raw values (full precision, empty when not measured) for spreadsheets and scripts."""
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["run", "method", "set", "split", "setting", "n_images", *metrics])
        for row in rows:
            values = [row.metrics.get(m) for m in metrics]
            n = "" if row.n_images is None else row.n_images
            texts = [row.run, row.method, row.set, row.split, row.setting, n]
            writer.writerow([*texts, *("" if v is None else v for v in values)])
    return path


# ------------------------------------------------------------------------------------------------- plot


def plot_comparison(rows: Sequence[Row], metrics: Sequence[str], path: Path) -> Path:
    """One panel per metric, splits on x (grouped by set), one line per (run, method, setting).

    Uses the Agg canvas directly instead of switching pyplot's global backend, so calling this from a
    notebook or a training process leaves their plotting alone.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # x positions: splits of one set side by side, one empty slot between sets (lines break there).
    positions: dict[tuple[str, str], int] = {}
    set_spans: dict[str, list[int]] = {}
    x = 0
    for entry in rows:
        if (entry.set, entry.split) in positions:
            continue
        if entry.set not in set_spans and positions:
            x += 1
        positions[(entry.set, entry.split)] = x
        set_spans.setdefault(entry.set, []).append(x)
        x += 1
    width = x

    series: dict[tuple[str, str, str], dict[int, dict[str, float | None]]] = {}
    for entry in rows:
        line = (entry.run, entry.method, entry.setting)
        series.setdefault(line, {})[positions[(entry.set, entry.split)]] = entry.metrics

    fig = Figure(figsize=(max(6.0, 1.2 * width + 3.0), 2.3 * len(metrics) + 1.0), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(metrics), 1, sharex=True, squeeze=False)[:, 0]
    markers = "osD^v<>pPX*h"
    colors = [f"C{i}" for i in range(10)]
    for ax, metric in zip(axes, metrics, strict=True):
        for k, ((label, method, setting), points) in enumerate(series.items()):
            ys = [math.nan] * width
            for pos, values in points.items():
                value = values.get(metric)
                ys[pos] = math.nan if value is None else value
            reference = setting == REFERENCE_SETTING
            ax.plot(
                range(width),
                ys,
                marker=markers[k % len(markers)],
                color="0.45" if reference else colors[k % len(colors)],
                linestyle=":" if reference else "-",
                label=" · ".join(part for part in (label, method, setting) if part),
            )
        ax.set_ylabel(header(metric))
        ax.grid(True, alpha=0.3)
        for xs in list(set_spans.values())[1:]:
            ax.axvline(xs[0] - 1, color="0.75", linewidth=0.8, linestyle="--")
    rotate = width > 6 or max(len(split) for _, split in positions) > 10
    axes[-1].set_xticks(
        list(positions.values()),
        [split for _, split in positions],
        rotation=30 if rotate else 0,
        ha="right" if rotate else "center",
    )
    axes[-1].set_xlim(-0.5, width - 0.5)
    top = axes[0].secondary_xaxis("top")
    top.set_xticks([sum(xs) / len(xs) for xs in set_spans.values()], list(set_spans), fontweight="bold")
    top.tick_params(axis="x", length=0)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center", fontsize="small", ncols=1 + len(labels) // 20)
    fig.savefig(path, dpi=120)
    return path


# ------------------------------------------------------------------------------------------------- main


def compare(
    run_dirs: Sequence[str | Path],
    metrics: Sequence[str] | None = None,
    out: str | Path | None = None,
    wandb_project: str | None = None,
    plot: bool = True,
    wandb_filters: dict[str, Any] | None = None,
    published: Sequence[str] = (),
) -> Comparison:
    """Load runs, build the table and write comparison.{md,csv,png}; raises CompareError on bad input.

    `published` names tables of published numbers (`lightning_dr2.published`): their rows are shown, marked,
    beside the measured ones and never ranked or averaged with them.
    """
    chosen = parse_metrics(metrics)
    if not run_dirs and not wandb_project:
        raise CompareError("nothing to compare: give run dirs (e.g. runs/eval_celeba_test) or --wandb-project")
    runs = load_local_runs(run_dirs) if run_dirs else []
    if wandb_project:
        runs += load_wandb_runs(wandb_project, wandb_filters)
    measured = list(runs)  # the published tables join `runs` next
    notes = []
    for name in published:
        table, entries = load_published(name)
        label = f"published: {published_path(name).stem}"
        runs.append(RunResults(label, table.citation, label, entries))
        notes += [f"{label}: {table.citation}", f"{label}: {table.note}"]
    unique_labels(runs)
    rows = ordered_rows(runs)
    if not rows:
        raise CompareError("the given runs have no results entries: " + ", ".join(r.source for r in runs))
    columns = select_columns(chosen, rows) if chosen is not None else present_columns(rows)
    if not columns:
        raise CompareError("no metric values in the given runs: " + ", ".join(r.source for r in runs))

    out_dir = check_output_location(out if out is not None else DEFAULT_OUT, "--out")
    files = [write_csv(rows, columns, out_dir / "comparison.csv")]
    figures = []
    if plot:
        files.append(plot_comparison(rows, columns, out_dir / "comparison.png"))
        figures.append(Figure("Metrics per split", files[-1]))
    sources = [Section("Runs", [f"{run.label}: {run.source}" for run in measured])]
    if notes:
        sources.append(Section("Published numbers (not measured here; never ranked with measured rows)", notes))
    files = [*write_report(out_dir, "comparison", "Run comparison", rows, columns, sources, figures), *files]
    return Comparison(rows=rows, metrics=columns, markdown=metrics_table(rows, columns), runs=runs, files=files)
