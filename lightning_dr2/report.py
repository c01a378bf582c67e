"""The one report writer of `eval`, `compare` and the quickstart: result rows -> Markdown/HTML tables and reports.

A row is one evaluated (set, split, setting), optionally of a named run. Tables mark the best value of each
(set, split) group in bold (the LQ "input" reference row is a baseline, never best); titles, arrows and
formats come from the metric catalogue. `write_report` writes `<stem>.md` (images linked) and a
self-contained `<stem>.html` (images embedded as base64 data URIs, no network) side by side, with a bar chart
per metric (`bar_charts`: one group per split, one bar per row; published rows hatched).
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightning_dr2.metrics.catalogue import column_order, format_value, header, metric_of, title

MISSING = "–"
REFERENCE_SETTING = "input"  # the papers' "Input" row: the LQ images scored as they are
LEGEND = (
    "↑ higher is better, ↓ lower is better; **bold**: best per set and split (the input row is the baseline, "
    f"never marked); {MISSING}: not measured."
)


def setting_name(N: Any, tau: Any, omega: Any = None) -> str:  # noqa: N803
    """The label of a DR2 (N, tau[, omega]) setting in result rows, run folders and metric keys: `N8_tau35`."""
    return f"N{N}_tau{tau}" + ("" if omega is None else f"_omega{omega}")


@dataclass
class Row:
    """One evaluated (set, split, setting); `run` names the run when several are compared."""

    set: str
    split: str
    setting: str
    metrics: dict[str, float | None]
    n_images: int | None = None
    run: str = ""
    published: bool = False  # a number from a paper (`lightning_dr2.published`): shown, never ranked
    method: str = ""  # what made the images (eval's `method`: DR2+<enhancer>, or a `predictions.<method>`)

    @classmethod
    def from_result(cls, result: Mapping[str, Any], run: str = "") -> Row:
        """A row of eval's results (`results.json` entries: method, set, split, setting, n_images, metrics)."""
        metrics = {k: metric_value(v) for k, v in result["metrics"].items() if metric_of(k) is not None}
        n_images, method = result.get("n_images"), str(result.get("method") or "")
        return cls(result["set"], result["split"], result["setting"], metrics, n_images, run, method=method)


@dataclass
class Figure:
    """An image shown under the table (a grid, a plot), with a heading and a caption; `chart`: a plot, drawn
    smoothly when the browser scales it (grids keep their pixels sharp)."""

    title: str
    path: Path
    caption: str = ""
    chart: bool = False


@dataclass
class Section:
    """A heading with bullet lines (notes, the sources of compared runs)."""

    title: str
    lines: list[str] = field(default_factory=list)


def metric_value(value: Any) -> float | None:
    """A metric value as float, or None when it was not measured (null, NaN) or is not a number."""
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return None if math.isnan(float(value)) else float(value)


def present_columns(rows: Sequence[Row]) -> list[str]:
    """Every metric any row measured, in the catalogue's order."""
    return column_order({k for r in rows for k, v in r.metrics.items() if v is not None})


def best_marks(rows: Sequence[Row], columns: Sequence[str]) -> set[tuple[int, str]]:
    """(row index, column) pairs holding the best value of their (set, split) group.

    Compared as displayed, so two values that print the same are both marked; the input reference row is
    left out because it is a baseline, not a contender (unless a group has nothing else); published rows
    are never ranked against measured ones. A value with nothing to beat (one contender) is not marked.
    """
    groups: dict[tuple[str, str], list[int]] = {}
    for i, row in enumerate(rows):
        groups.setdefault((row.set, row.split), []).append(i)
    marks: set[tuple[int, str]] = set()
    for indices in groups.values():
        measured = [i for i in indices if not rows[i].published]
        contenders = [i for i in measured if rows[i].setting != REFERENCE_SETTING] or measured
        for column in columns:
            scored = [(rows[i].metrics.get(column), i) for i in contenders]
            scored = [(v, i) for v, i in scored if v is not None]
            if len(scored) < 2:
                continue
            pick = max if metric_of(column).higher_is_better else min  # type: ignore[union-attr]
            best = format_value(column, pick(v for v, _ in scored))
            marks.update((i, column) for v, i in scored if format_value(column, v) == best)
    return marks


def _cells(rows: Sequence[Row], columns: Sequence[str]) -> tuple[list[str], list[list[tuple[str, bool]]]]:
    """Table head and (text, is_best) cells; the Run, Method and n columns only when some row has them."""
    with_run = any(r.run for r in rows)
    with_method = any(r.method for r in rows)
    with_n = any(r.n_images is not None for r in rows)
    head = (["Run"] if with_run else []) + (["Method"] if with_method else []) + ["Set", "Split", "Setting"]
    head += ["n"] if with_n else []
    head += [header(c) for c in columns]
    marks = best_marks(rows, columns)
    body = []
    for i, r in enumerate(rows):
        cells = ([(r.run, False)] if with_run else []) + ([(r.method, False)] if with_method else [])
        cells += [(r.set, False), (r.split, False), (r.setting, False)]
        if with_n:
            cells.append((MISSING if r.n_images is None else str(r.n_images), False))
        cells += [(format_value(c, r.metrics.get(c), MISSING), (i, c) in marks) for c in columns]
        body.append(cells)
    return head, body


def metrics_table(rows: Sequence[Row], columns: Sequence[str] | None = None) -> str:
    """The Markdown table of results (what the papers' tables show), best values in bold."""
    columns = present_columns(rows) if columns is None else list(columns)
    head, body = _cells(rows, columns)
    n_text = len(head) - len(columns)
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * n_text + ["---:"] * len(columns)) + "|"]
    for cells in body:
        texts = [t.replace("|", "\\|") for t, _ in cells]
        texts = [f"**{t}**" if best else t for t, (_, best) in zip(texts, cells, strict=True)]
        lines.append("| " + " | ".join(texts) + " |")
    return "\n".join(lines)


def html_table(rows: Sequence[Row], columns: Sequence[str] | None = None) -> str:
    columns = present_columns(rows) if columns is None else list(columns)
    head, body = _cells(rows, columns)
    n_text = len(head) - len(columns)
    out = ["<table>", "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"]
    for row, cells in zip(rows, body, strict=True):
        tds = []
        for j, (text, best) in enumerate(cells):
            inner = f"<b>{html.escape(text)}</b>" if best else html.escape(text)
            tds.append(f'<td class="{"num" if j >= n_text else "txt"}{" best" if best else ""}">{inner}</td>')
        out.append(('<tr class="published">' if row.published else "<tr>") + "".join(tds) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


_STYLE = """body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:1em 0}
th,td{border:1px solid #ccc;padding:4px 10px}th{background:#f3f3f3}
td.num{text-align:right;font-variant-numeric:tabular-nums}td.best{background:#e6f4ea}
tr.published td{font-style:italic;color:#555}
img{image-rendering:pixelated;max-width:100%;border:1px solid #ddd}img.chart{image-rendering:auto}
div.charts{display:flex;flex-wrap:wrap;gap:1em}div.charts img{max-width:100%;border:none}
figure{margin:1.5em 0}.legend{color:#555}"""


CHART_CLASS = ' class="chart"'
CHARTS_CAPTION = (
    "One chart per metric: a group of bars per set / split, a bar per row (the same colour in every chart); "
    "hatched bars are published numbers, not measured here and never averaged; the input row is the baseline."
)


def _data_uri(path: Path) -> str:
    mime = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}.get(path.suffix.lower(), "image/png")
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def write_report(
    out_dir: Path,
    stem: str,
    title: str,
    rows: Sequence[Row],
    columns: Sequence[str] | None = None,
    sections: Sequence[Section] = (),
    figures: Sequence[Figure] = (),
) -> tuple[Path, Path]:
    """Write `<stem>.md` and a self-contained `<stem>.html` in `out_dir`; returns both paths.

    The per-metric bar charts (`bar_charts`) are drawn from `rows` into `<stem>_charts/` and shown first.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    columns = present_columns(rows) if columns is None else list(columns)
    charts = bar_charts(rows, columns, out_dir / f"{stem}_charts")
    md = [f"# {title}", "", metrics_table(rows, columns), "", LEGEND, ""]
    page = [
        "<!doctype html>",
        '<html><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        html_table(rows, columns),
        f'<p class="legend">{html.escape(LEGEND.replace("**bold**", "bold"))}</p>',
    ]
    for section in sections:
        if not section.lines:
            continue
        md += [f"{section.title}:", "", *[f"- {line}" for line in section.lines], ""]
        page += [f"<h2>{html.escape(section.title)}</h2><ul>"]
        page += [f"<li>{html.escape(line)}</li>" for line in section.lines] + ["</ul>"]
    if charts:
        md += ["## Per split", "", CHARTS_CAPTION, ""]
        md += [f"![{c.title}]({Path(c.path).resolve().relative_to(out_dir.resolve()).as_posix()})" for c in charts]
        page += [f'<h2>Per split</h2><p class="legend">{html.escape(CHARTS_CAPTION)}</p><div class="charts">']
        page += [f'<img class="chart" src="{_data_uri(Path(c.path))}" alt="{html.escape(c.title)}">' for c in charts]
        md.append("")
        page.append("</div>")
    for fig in figures:
        rel = Path(fig.path).resolve().relative_to(out_dir.resolve()).as_posix()
        md += [f"## {fig.title}", "", *([fig.caption, ""] if fig.caption else []), f"![{fig.title}]({rel})", ""]
        page += [
            f"<figure><h2>{html.escape(fig.title)}</h2>",
            *([f"<figcaption>{html.escape(fig.caption)}</figcaption>"] if fig.caption else []),
            f'<img{CHART_CLASS if fig.chart else ""} src="{_data_uri(Path(fig.path))}" '
            f'alt="{html.escape(fig.title)}"></figure>',
        ]
    page.append("</body></html>")
    md_path, html_path = out_dir / f"{stem}.md", out_dir / f"{stem}.html"
    md_path.write_text("\n".join(md), encoding="utf-8")
    html_path.write_text("\n".join(page), encoding="utf-8")
    return md_path, html_path


def row_label(row: Row) -> str:
    """A row's name in charts: its run (when several are compared) and its setting (or published method)."""
    return " · ".join(part for part in (row.run, row.setting) if part)


@dataclass
class Bar:
    label: str
    value: float
    published: bool = False


def bar_groups(rows: Sequence[Row], metric: str) -> dict[str, list[Bar]]:
    """One metric's bars: "set / split" -> one bar per row that measured it, in row order. Nothing is averaged:
    a published row is a bar of its own, marked, beside the measured ones."""
    groups: dict[str, list[Bar]] = {}
    for row in rows:
        value = row.metrics.get(metric)
        if value is not None:
            groups.setdefault(f"{row.set} / {row.split}", []).append(Bar(row_label(row), value, row.published))
    return groups


REFERENCE_COLOR = "0.6"


def bar_colors(labels: Sequence[str]) -> dict[str, str] | None:
    """A distinct colour per row label (tab10, or tab20 for up to 18 labels; their greys are left to the input
    reference row), kept across charts; None when there are more labels than distinguishable colours."""
    contenders = [label for label in dict.fromkeys(labels) if label != REFERENCE_SETTING]
    palette = [f"C{i}" for i in range(10) if i != 7]
    if len(contenders) > len(palette):
        from matplotlib import colormaps

        palette = [colormaps["tab20"](i) for i in range(20) if i not in (14, 15)]
    if len(contenders) > len(palette):
        return None
    return {label: palette[i] for i, label in enumerate(contenders)} | {REFERENCE_SETTING: REFERENCE_COLOR}


def draw_bars(metric: str, groups: Mapping[str, Sequence[Bar]], colors: Mapping[str, Any] | None) -> Any:
    """A matplotlib Figure: groups side by side (a gap between), each bar labelled with its value; published
    bars hatched and light, the LQ input reference grey; the title says which direction is better. Rows are
    told apart by colour (a legend), or, with `colors=None` (too many rows), by a label under each bar."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure as MplFigure
    from matplotlib.patches import Patch

    n_bars = sum(len(bars) for bars in groups.values())
    slots = n_bars + len(groups) - 1
    crowded = n_bars > 12
    fig = MplFigure(figsize=(min(11.0, max(5.4, 1.5 + 0.42 * slots)), 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    x, centres, legend, ticks = 0, [], {}, []
    for bars in groups.values():
        start = x
        for bar in bars:
            color = REFERENCE_COLOR if bar.label == REFERENCE_SETTING else "C0"
            color = colors[bar.label] if colors is not None else color
            style = {"facecolor": "white", "hatch": "///", "edgecolor": color} if bar.published else {"color": color}
            patch = ax.bar(x, bar.value, width=0.85, linewidth=1.2, **style)
            ax.bar_label(
                patch,
                labels=[format_value(metric, bar.value)],
                padding=2,
                fontsize=7 if crowded else 8,
                rotation=90 if crowded else 0,
            )
            name = bar.label + (" (published)" if bar.published and "published" not in bar.label else "")
            legend.setdefault(name, Patch(label=name, linewidth=1.2, **style))
            ticks.append((x, name))
            x += 1
        centres.append((start + x - 1) / 2)
        x += 1
    better = "higher" if metric_of(metric).higher_is_better else "lower"  # type: ignore[union-attr]
    ax.set_title(f"{header(metric)}  ({better} is better)", fontsize=11)
    if colors is None:
        ax.set_xticks([t for t, _ in ticks], [name for _, name in ticks], rotation=90, fontsize=7)
        for centre, name in zip(centres, groups, strict=True):
            ax.text(centre, 0.98, name, transform=ax.get_xaxis_transform(), ha="center", va="top", fontsize=9)
    else:
        ax.set_xticks(centres, [name.replace(" / ", "\n") for name in groups], fontsize=9)
        fig.legend(handles=list(legend.values()), loc="outside lower center", ncols=min(4, len(legend)), fontsize=8)
    ax.tick_params(axis="x", length=0)
    ax.margins(y=0.25 if crowded else 0.12)
    ax.grid(True, axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.spines[["top", "right"]].set_visible(False)
    return fig


CHART_DPI = 100  # 5.4-11 inch charts: 540-1100 px, small ones two side by side in a browser window


def bar_charts(rows: Sequence[Row], columns: Sequence[str], out_dir: Path) -> list[Figure]:
    """Per metric, one bar chart across splits and rows, drawn when it has two or more bars (a lone value
    compares with nothing; the table shows it). A row keeps its colour in every chart."""
    colors = bar_colors([row_label(r) for r in rows])
    figures = []
    for metric in columns:
        groups = bar_groups(rows, metric)
        if sum(len(bars) for bars in groups.values()) < 2:
            continue
        path = Path(out_dir) / f"bars_{metric}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        draw_bars(metric, groups, colors).savefig(path, dpi=CHART_DPI)
        figures.append(Figure(f"{title(metric)} per split", path, CHARTS_CAPTION, chart=True))
    return figures


MIN_TILE = 128  # px: the smallest face a person can judge in a grid


def save_grid(images: Any, path: Path, nrow: int, min_tile: int = MIN_TILE) -> Path:
    """(B, 3, H, W) images in [-1, 1] -> a PNG grid, each tile upscaled (nearest, integer factor) to at least
    `min_tile` px so that tiny CPU-run faces (32 px) can be seen; larger images are saved as they are."""
    import torch.nn.functional as F  # noqa: N812 - lazy: `compare` reads reports without torch
    from torchvision.utils import save_image

    images = images.detach().float().cpu()
    factor = max(1, math.ceil(min_tile / min(images.shape[-2:])))
    if factor > 1:
        images = F.interpolate(images, scale_factor=factor, mode="nearest")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(((images + 1) / 2).clamp(0, 1), path, nrow=nrow, padding=2)
    return path


def plot_ablation(rows: Sequence[Mapping[str, Any]], out_dir: Path) -> list[Figure]:
    """The paper's (N, tau) ablation: per (set, split) with two or more tau values, each metric against tau,
    one line per N, the best (N, tau) of each metric starred. Rows are eval's results entries."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure as MplFigure

    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for row in rows:
        if row.get("N") is not None and row.get("tau") is not None:
            groups.setdefault((row["set"], row["split"]), []).append(row)
    figures = []
    for (set_name, split), entries in groups.items():
        if len({e["tau"] for e in entries}) < 2:
            continue
        metrics = column_order({k for e in entries for k, v in e["metrics"].items() if metric_value(v) is not None})
        if not metrics:
            continue
        fig = MplFigure(figsize=(4.0 * len(metrics), 3.2), layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(1, len(metrics), squeeze=False)[0]
        for ax, metric in zip(axes, metrics, strict=True):
            points = [(e["N"], e["tau"], metric_value(e["metrics"].get(metric))) for e in entries]
            points = [p for p in points if p[2] is not None]
            for n in sorted({p[0] for p in points}):
                line = sorted((tau, v) for m, tau, v in points if m == n)
                ax.plot([t for t, _ in line], [v for _, v in line], marker="o", label=f"N={n}")
            pick = max if metric_of(metric).higher_is_better else min  # type: ignore[union-attr]
            best = pick(points, key=lambda p: p[2])
            ax.plot([best[1]], [best[2]], marker="*", markersize=16, color="gold", markeredgecolor="k", zorder=5)
            ax.set_title(f"{header(metric)}  best: N={best[0]}, tau={best[1]}", fontsize="small")
            ax.set_xlabel("tau")
            ax.grid(True, alpha=0.3)
        axes[0].legend(fontsize="small")
        path = Path(out_dir) / f"ablation_{set_name}_{split}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
        caption = "each metric against tau, one line per N; the star is the best (N, tau)"
        figures.append(Figure(f"(N, tau) ablation: {set_name} / {split}", path, caption, chart=True))
    return figures
