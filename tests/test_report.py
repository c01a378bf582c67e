"""The report writer's HTML: self-contained, every row listed, images decodable, per-split bar charts; and
the page as a browser shows it (headless Chromium, when installed)."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from html_page import parse_page
from PIL import Image, PngImagePlugin

from lightning_dr2.report import (
    Figure,
    Row,
    bar_charts,
    bar_colors,
    bar_groups,
    draw_bars,
    row_label,
    save_grid,
    write_report,
)

METRICS = {"psnr": 24.0, "ssim": 0.6, "lpips": 0.32, "deg": 38.5}


def _rows() -> list[Row]:
    rows = []
    for k, split in enumerate(("x8_medium", "x16_heavy")):
        for i, setting in enumerate(("input", "N4_tau35", "N8_tau35")):
            rows.append(Row("celeba_test", split, setting, {m: v + i - k for m, v in METRICS.items()}, 100))
        rows.append(Row("celeba_test", split, "DR2+VQFR", {"lpips": 0.3893}, run="published: dr2", published=True))
    return rows


def _report(tmp_path: Path, rows: list[Row] | None = None) -> Path:
    rows = _rows() if rows is None else rows
    grid = save_grid(torch.rand(4, 3, 32, 32) * 2 - 1, tmp_path / "report" / "grid.png", nrow=4)
    return write_report(tmp_path, "report", "Demo", rows, figures=[Figure("a grid", grid, "input | output")])[1]


def _embedded_images(page: str) -> list[Image.Image]:
    return parse_page(page).png_images()


def test_bar_chart_per_metric_with_a_bar_per_row_and_published_rows_hatched(tmp_path: Path) -> None:
    rows = _rows()
    charts = bar_charts(rows, list(METRICS), tmp_path)
    assert [c.path.name for c in charts] == [f"bars_{m}.png" for m in METRICS]
    assert all(Image.open(c.path).size[0] >= 500 for c in charts)
    colors = bar_colors([row_label(r) for r in rows])
    for metric in METRICS:
        groups = bar_groups(rows, metric)
        assert list(groups) == ["celeba_test / x8_medium", "celeba_test / x16_heavy"]
        published = 1 if metric == "lpips" else 0  # only LPIPS has a published number here
        assert [len(bars) for bars in groups.values()] == [3 + published] * 2
        axes = draw_bars(metric, groups, colors).axes[0]
        assert len(axes.patches) == 2 * (3 + published)
        assert sum(bool(p.get_hatch()) for p in axes.patches) == 2 * published
        better = "higher" if metric in ("psnr", "ssim") else "lower"
        assert f"{better} is better" in axes.get_title()
    # every chart gives a row the same colour; the published row is its own bar, never averaged in
    lpips = bar_groups(rows, "lpips")["celeba_test / x8_medium"]
    assert [(b.label, b.value, b.published) for b in lpips][-1] == ("published: dr2 · DR2+VQFR", 0.3893, True)


def test_too_many_rows_for_colours_label_each_bar(tmp_path: Path) -> None:
    rows = [Row("s", "x8", f"N{i}_tau35", {"psnr": 20.0 + i}) for i in range(25)]
    assert bar_colors([r.setting for r in rows]) is None
    axes = draw_bars("psnr", bar_groups(rows, "psnr"), None).axes[0]
    assert [t.get_text() for t in axes.get_xticklabels()] == [r.setting for r in rows]


def test_a_lone_value_gets_no_chart(tmp_path: Path) -> None:
    rows = [Row("s", "x8", "N4_tau35", {"psnr": 20.0, "ssim": 0.5}), Row("s", "x8", "N8_tau35", {"psnr": 21.0})]
    assert [c.path.name for c in bar_charts(rows, ["psnr", "ssim"], tmp_path)] == ["bars_psnr.png"]
    page = _report(tmp_path / "one", rows[:1]).read_text()
    assert "Per split" not in page and len(_embedded_images(page)) == 1  # the grid only


def test_html_is_self_contained_lists_every_row_and_embeds_decodable_images(tmp_path: Path) -> None:
    html_path = _report(tmp_path)
    page = html_path.read_text()
    parsed = parse_page(page)
    assert parsed.external == []  # nothing fetched from elsewhere, nothing run
    for row in _rows():
        assert row.setting in parsed.cells
    assert page.count('<tr class="published">') == 2
    images = parsed.png_images()  # each decodes, or raises
    assert len(images) == 1 + len(METRICS)  # the grid and a chart per metric
    assert all(min(image.size) > 0 for image in images)
    md = (tmp_path / "report.md").read_text()
    assert all((tmp_path / link).is_file() for link in re.findall(r"\]\(([^)]+\.png)\)", md))


def _chromium() -> str | None:
    return next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)


PROBE = """<script>window.addEventListener("load", () => {
  const out = document.createElement("pre"); out.id = "probe";
  out.textContent = JSON.stringify({
    images: [...document.images].map(i => [i.complete, i.naturalWidth, i.naturalHeight]),
    rows: [...document.querySelectorAll("table tr")].map(r => r.innerText)});
  document.body.appendChild(out);
});</script>"""


@pytest.mark.skipif(_chromium() is None, reason="no Chromium installed (chromium, chromium-browser, google-chrome)")
def test_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    """The page as a browser loads it: every image decoded (natural size = the PNG's), every row in the table."""
    html_path = _report(tmp_path)
    page = html_path.read_text()
    probe = tmp_path / "probe.html"  # the report plus a probe script; the report itself runs no script
    probe.write_text(page.replace("</body>", PROBE + "</body>"))
    cmd = [
        _chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=5000",
        "--dump-dom",
        probe.as_uri(),
    ]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.DOTALL)
    assert found, f"the probe did not run; Chromium printed: {dom[:500]}"
    seen = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    expected = [image.size for image in _embedded_images(page)]
    assert [(w, h) for complete, w, h in seen["images"] if complete] == expected
    rows = seen["rows"][1:]
    assert len(rows) == len(_rows())
    for text, row in zip(rows, _rows(), strict=True):
        assert row.setting in text and row.split in text


def _png_whose_base64_spells(word: str) -> str:
    """A valid PNG's base64 that contains `word` (bytes in a private chunk), as CPU-dependent pixels may."""
    raw = base64.b64decode(word + "A" * (-len(word) % 4))
    for pad in range(3):
        info = PngImagePlugin.PngInfo()
        info.add(b"tsTx", b"\0" * pad + raw)
        buffer = io.BytesIO()
        Image.new("RGB", (2, 2)).save(buffer, format="PNG", pnginfo=info)
        text = base64.b64encode(buffer.getvalue()).decode()
        if word in text:
            return text
    raise AssertionError(f"no alignment spells {word}")


def test_page_reader_flags_what_a_browser_fetches_and_never_base64_text() -> None:
    """The check the report tests rely on: base64 that spells "http" or "//cdn" is no reference; each way a
    page can pull something from elsewhere is one."""
    images = "".join(f'<img src="data:image/png;base64,{_png_whose_base64_spells(w)}">' for w in ("http", "//cdn"))
    clean = f'<html><head><meta http-equiv="x"><style>td {{color: red}}</style></head><body>{images}</body></html>'
    parsed = parse_page(clean)
    assert parsed.external == [] and len(parsed.png_images()) == 2
    for reference in [
        '<img src="https://example.org/a.png">',
        '<img src="//cdn.example.org/a.png">',
        '<link rel="stylesheet" href="style.css">',
        "<style>@import 'style.css';</style>",
        '<div style="background: url(a.png)"></div>',
        "<script>fetch('x')</script>",
        '<a href="http://example.org">x</a>',
        '<img src="data:image/png;base64,AAAA" onerror="fetch(1)">',
    ]:
        assert parse_page(clean.replace("</body>", reference + "</body>")).external, reference
