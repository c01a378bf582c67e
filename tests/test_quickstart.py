"""The quickstart end to end, shrunk to seconds: every stage runs and the report has both rows."""

from __future__ import annotations

import json

import pytest

from lightning_dr2.jobs import quickstart
from lightning_dr2.jobs.quickstart import run_quickstart, split_overrides

# The DDPM stage (experiments/quickstart.yaml) and the enhancer stage (`enhance.` prefix) cut to a few steps.
TINY_QUICKSTART = [
    "data.root=faces",
    "data.synthetic_n=16",
    "data.batch_size=4",
    "data.val_max=4",
    "data.num_workers=0",
    "trainer.max_steps=2",
    "trainer.val_check_interval=1000000",
    "trainer.limit_val_batches=0",
    "trainer.progress_bar=false",
    "checkpoint.every_n_steps=1000",
    "sampling.num_samples=4",
    "sampling.steps=5",
    "wandb.mode=disabled",
    "run=tiny",
    "enhance.trainer.max_steps=2",
    "enhance.trainer.val_check_interval=2",
    "enhance.checkpoint.every_n_steps=2",
    "enhance.data.batch_size=2",
    "enhance.data.val_n=2",
    "enhance.trainer.progress_bar=false",
]


def test_overrides_are_split_by_stage() -> None:
    assert split_overrides(["trainer.max_steps=3", "enhance.trainer.max_steps=4"]) == (
        ["trainer.max_steps=3"],
        ["trainer.max_steps=4"],
    )


@pytest.mark.slow
def test_quickstart_trains_the_enhancer_and_reports_both_rows(monkeypatch) -> None:
    monkeypatch.setattr(quickstart, "ENHANCER_FACES", 6)
    lines: list[str] = []
    result = run_quickstart(TINY_QUICKSTART, progress=lines.append)

    assert [line.split()[1] for line in lines] == ["1/4", "2/4", "3/4", "4/4"]
    export = result.enhanced.run_dir.parent.parent / "enhance_tiny" / "enhancer" / "export" / "enhancer_ema.pt"
    assert export.is_file() and export.with_suffix(".json").is_file()
    assert result.outputs["exported enhancer"] == str(export)
    cache = result.enhanced.run_dir.parent.parent / "enhancer" / "dr2_cache" / "dr2"
    assert len(list(cache.glob("*.png"))) == 6  # one DR2 output per training face, where the enhancer read them

    labels = {row.run for row in result.comparison.rows}
    assert {"eval/dr2", "eval/dr2_enhancer"} <= labels  # DR2 alone and DR2 + the enhancer, side by side
    assert json.loads((result.enhanced.run_dir / "results.json").read_text())["method"] == "DR2+sparnet"
    summary = result.summary()
    assert "eval/dr2_enhancer" in summary and "eval/dr2 " in summary
    html = result.outputs["comparison (both rows)"]
    assert html.endswith(".html") and "dr2_enhancer" in open(html, encoding="utf-8").read()
    assert result.enhanced.report_html.is_file()
