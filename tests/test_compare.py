"""`compare`: local results.json and (mocked) W&B runs -> Markdown/CSV/PNG comparison, and its error messages."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from html_page import parse_page

from lightning_dr2.cli import main as cli_main
from lightning_dr2.jobs import compare as cmp


def _entry(split: str, setting: str, **metrics: Any) -> dict[str, Any]:
    return {
        "set": "celeba_test",
        "split": split,
        "setting": setting,
        "N": 8,
        "tau": 35,
        "omega": 60,
        "n_images": 100,
        "metrics": metrics,
    }


def _write_run(root: Path, experiment: str, run: str, results: list[dict[str, Any]]) -> Path:
    run_dir = root / experiment / run
    run_dir.mkdir(parents=True)
    data = {
        "experiment": experiment,
        "run": run,
        "created": "2026-11-26T05:30:00",
        "wandb_id": f"{experiment}-{run}",
        "tags": ["eval"],
        "config": {"dr2": {"N": 8}},
        "results": results,
    }
    (run_dir / "results.json").write_text(json.dumps(data))
    return run_dir


@pytest.fixture
def two_runs(tmp_path: Path) -> tuple[Path, Path]:
    """Run A wins PSNR/SSIM on x8, run B wins LPIPS/FID; run B has no LPIPS on x16 (no weights)."""
    runs = tmp_path / "runs"
    a = _write_run(
        runs,
        "eval_a",
        "20261126-053000",
        [
            _entry("x8_medium", "input", psnr=26.0, ssim=0.70, lpips=0.50, fid=120.0, deg=50.0),
            _entry("x8_medium", "N8_tau35", psnr=24.1, ssim=0.61, lpips=0.32, fid=55.2, deg=38.5, deg_identical=0),
            _entry("x16_heavy", "N8_tau35", psnr=21.0, ssim=0.50, lpips=0.40, fid=70.0, deg=45.0),
        ],
    )
    b = _write_run(
        runs,
        "eval_b",
        "20261127-010000",
        [
            _entry("x8_medium", "N4_tau35", psnr=23.5, ssim=0.58, lpips=0.30, fid=50.0, deg=39.0),
            _entry("x16_heavy", "N4_tau35", psnr=21.5, ssim=0.52, lpips=None, fid=68.0, deg=44.0),
        ],
    )
    return a, b


def _row(table: str, run: str, split: str, setting: str) -> list[str]:
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0] == run and cells[2] == split and cells[3] == setting:
            return cells
    raise AssertionError(f"no row {run} {split} {setting} in\n{table}")


def test_table_csv_png(two_runs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert cli_main(["compare", *map(str, two_runs), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    table = (out / "comparison.md").read_text()
    assert printed.strip() in table

    header = printed.splitlines()[0]
    assert "PSNR ↑" in header and "SSIM ↑" in header
    assert "LPIPS ↓" in header and "FID ↓" in header and "Deg ↓" in header

    a, b = "eval_a/20261126-053000", "eval_b/20261127-010000"
    # columns: Run, Set, Split, Setting, n, PSNR, SSIM, LPIPS, FID, Deg
    assert _row(printed, a, "x8_medium", "N8_tau35")[5:] == ["**24.10**", "**0.6100**", "0.3200", "55.20", "**38.50**"]
    assert _row(printed, b, "x8_medium", "N4_tau35")[5:] == ["23.50", "0.5800", "**0.3000**", "**50.00**", "39.00"]
    # the LQ input row is a reference: its higher PSNR is not marked best
    assert _row(printed, a, "x8_medium", "input")[5:] == ["26.00", "0.7000", "0.5000", "120.00", "50.00"]
    # x16: a separate group; B has no LPIPS there, so A's is best and B shows a dash
    assert _row(printed, a, "x16_heavy", "N8_tau35")[5:] == ["21.00", "0.5000", "0.4000", "70.00", "45.00"]
    assert _row(printed, b, "x16_heavy", "N4_tau35")[5:] == ["**21.50**", "**0.5200**", "–", "**68.00**", "**44.00**"]
    # grouped by split: both x8 rows come before the x16 rows
    splits = [line.split("|")[3].strip() for line in printed.splitlines()[2:] if line.startswith("|")]
    assert splits == ["x8_medium"] * 3 + ["x16_heavy"] * 2

    with (out / "comparison.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["run", "method", "set", "split", "setting", "n_images", *"psnr ssim lpips fid deg".split()]
    assert len(rows) == 5
    b16 = next(r for r in rows if r["run"] == b and r["split"] == "x16_heavy")
    assert b16["lpips"] == "" and float(b16["psnr"]) == 21.5 and b16["n_images"] == "100"

    png = out / "comparison.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (out / "comparison.html").read_text()  # the shared report writer: table + plot in one file
    # the plot and a bar chart per metric
    assert "<b>24.10</b>" in page
    parsed = parse_page(page)
    assert len(parsed.png_images()) == 1 + 5 and parsed.external == []


def test_fid_columns_name_their_reference(tmp_path: Path) -> None:
    # FID against FFHQ-512 and FID against a split's own GT are different numbers: never one column.
    runs = tmp_path / "runs"
    a = _write_run(runs, "eval_a", "r", [_entry("x8", "N8_tau35", psnr=20.0, fid_ffhq512=50.0)])
    b = _write_run(runs, "eval_b", "r", [_entry("x8", "N8_tau35", psnr=21.0, fid_gt=30.0)])
    result = cmp.compare([a, b], None, tmp_path / "out", plot=False)
    assert result.metrics == ["psnr", "fid_ffhq512", "fid_gt"]
    assert "FID (FFHQ-512) ↓" in result.markdown and "FID (GT) ↓" in result.markdown
    # each FID stands alone in its column: never ranked against the other reference's value
    assert "**50.00**" not in result.markdown and "**30.00**" not in result.markdown
    assert cmp.compare([a, b], ["fid"], tmp_path / "out2", plot=False).metrics == ["fid_ffhq512", "fid_gt"]
    assert cmp.compare([a, b], ["fid_gt"], tmp_path / "out3", plot=False).metrics == ["fid_gt"]


def test_metric_selection_and_no_plot(two_runs: tuple[Path, Path], tmp_path: Path) -> None:
    result = cmp.compare(two_runs, ["FID", "psnr"], tmp_path / "out", plot=False)
    assert result.metrics == ["fid", "psnr"]  # the order asked for
    assert "FID ↓ | PSNR ↑" in result.markdown and "SSIM" not in result.markdown
    assert not (tmp_path / "out" / "comparison.png").exists()


def test_default_metrics_are_those_present(tmp_path: Path) -> None:
    run = _write_run(tmp_path, "eval_c", "r1", [_entry("x8", "N8_tau35", ssim=0.5, psnr=20.0, lpips=None)])
    result = cmp.compare([run], None, tmp_path / "out", plot=False)
    assert result.metrics == ["psnr", "ssim"]


def test_parent_folder_and_file_paths(two_runs: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = two_runs
    assert cmp.find_results([tmp_path / "runs"]) == [a / "results.json", b / "results.json"]
    # the same file twice (as a file and inside a parent) is read once
    assert cmp.find_results([a / "results.json", tmp_path / "runs"]) == [a / "results.json", b / "results.json"]
    result = cmp.compare([tmp_path / "runs"], None, tmp_path / "out", plot=False)
    assert [r.label for r in result.runs] == ["eval_a/20261126-053000", "eval_b/20261127-010000"]


def test_duplicate_labels_get_folder_name(tmp_path: Path) -> None:
    results = [_entry("x8", "N8_tau35", psnr=20.0)]
    first = _write_run(tmp_path / "one", "eval", "r1", results)
    second = _write_run(tmp_path / "two", "eval", "r1", results)
    data = json.loads((second / "results.json").read_text())
    (second / "results.json").unlink()
    second = second.rename(second.parent / "r1_copy")
    (second / "results.json").write_text(json.dumps(data))
    result = cmp.compare([first, second], None, tmp_path / "out", plot=False)
    assert [r.label for r in result.runs] == ["eval/r1 (r1)", "eval/r1 (r1_copy)"]


def test_missing_fields_fall_back_to_folders(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "eval_x" / "42"
    run_dir.mkdir(parents=True)
    entry = {"set": "s", "split": "x8", "N": 4, "tau": 20, "metrics": None}
    (run_dir / "results.json").write_text(json.dumps({"results": [entry]}))
    run = cmp.load_results(run_dir / "results.json")
    assert run.label == "eval_x/42"
    assert run.entries[0].setting == "N4_tau20" and run.entries[0].metrics == {}


# ---------------------------------------------------------------------------------------------- errors


def test_error_no_results(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    with pytest.raises(cmp.CompareError, match="no results.json in .*empty_dir"):
        cmp.find_results([empty])
    with pytest.raises(cmp.CompareError, match="does_not_exist.* does not exist"):
        cmp.find_results([tmp_path / "does_not_exist"])
    assert cli_main(["compare", str(empty), "--out", str(tmp_path / "out"), "--no-plot"]) == 2
    assert "empty_dir" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"experiment": "e"}', "'results' must be a list"),
        ('{"results": [{"split": "x8"}]}', r"results\[0\] has no 'set'"),
        ('{"results": [{"set": "s", "split": "x8", "metrics": [1]}]}', "'metrics' must be an object"),
        ('{"results": [{"set": "s", "split": "x8", "metrics": {"psnr": "high"}}]}', "metric 'psnr' must be a number"),
    ],
)
def test_error_malformed(tmp_path: Path, content: str, problem: str) -> None:
    path = tmp_path / "bad" / "results.json"
    path.parent.mkdir()
    path.write_text(content)
    with pytest.raises(cmp.CompareError, match=problem) as info:
        cmp.compare([path.parent], None, tmp_path / "out", plot=False)
    assert str(path) in str(info.value)


def test_error_unknown_metric(two_runs: tuple[Path, Path], tmp_path: Path) -> None:
    with pytest.raises(cmp.CompareError, match="unknown metric 'niqe'; valid metrics: psnr, ssim, lpips, fid, deg"):
        cmp.compare(two_runs, ["psnr", "niqe"], tmp_path / "out")
    assert not (tmp_path / "out").exists()  # fails before writing anything


def test_error_nothing_to_compare(tmp_path: Path) -> None:
    with pytest.raises(cmp.CompareError, match="nothing to compare"):
        cmp.compare([], None, tmp_path / "out")


# ------------------------------------------------------------------------------------------------- W&B


class _FakeApi:
    """Stands in for wandb.Api: records the query, returns the fake runs; never touches the network."""

    calls: list[tuple[str, Any]] = []

    def __init__(self, runs: list[Any]) -> None:
        self._runs = runs

    def runs(self, path: str, filters: dict[str, Any] | None = None) -> list[Any]:
        _FakeApi.calls.append((path, filters))
        return self._runs


def _fake_run(name: str, group: str | None, run_id: str, summary: dict[str, Any], config: dict | None = None) -> Any:
    return SimpleNamespace(name=name, group=group, id=run_id, summary=summary, config=config or {}, tags=["eval"])


def test_wandb_runs(monkeypatch: pytest.MonkeyPatch, two_runs: tuple[Path, Path], tmp_path: Path) -> None:
    import wandb

    runs = [
        # framework naming: name = experiment/run, group = experiment; 4-part keys, setting from config
        _fake_run(
            "eval_w/20261128-000000",
            "eval_w",
            "eval_w-20261128-000000",
            {
                "eval/celeba_test/x8_medium/psnr": 25.0,
                "eval/celeba_test/x8_medium/lpips": 0.29,
                "eval/celeba_test/x8_medium/deg_identical": 3,
                "eval/celeba_test/x8_medium/n_images": 100,
                "train/loss": 0.1,
                "_runtime": 12,
            },
            {"settings": [{"N": 16, "tau": 35, "omega": None}]},
        ),
        # 5-part keys (several settings), a plain run name with a group, a NaN value
        _fake_run(
            "sweep-3",
            "eval_v",
            "abc123",
            {
                "eval/celeba_test/x8_medium/N8_tau35/psnr": 24.5,
                "eval/celeba_test/x8_medium/N8_tau35/ssim": float("nan"),
                "eval/celeba_test/x8_medium/N4_tau20/psnr": 23.0,
            },
        ),
        _fake_run("no-eval", None, "zzz", {"train/loss": 0.2}),  # skipped: nothing to compare
    ]
    monkeypatch.setattr(wandb, "Api", lambda *a, **k: _FakeApi(runs))
    _FakeApi.calls.clear()

    result = cmp.compare([two_runs[0]], ["psnr", "ssim", "lpips"], tmp_path / "out", "me/dr2", plot=True)
    assert _FakeApi.calls == [("me/dr2", None)]
    labels = [r.label for r in result.runs]
    assert labels == ["eval_a/20261126-053000", "eval_w/20261128-000000", "eval_v/sweep-3"]
    assert result.runs[1].source == "wandb:me/dr2/eval_w-20261128-000000"

    table = result.markdown
    assert _row(table, "eval_w/20261128-000000", "x8_medium", "N16_tau35")[5:] == ["**25.00**", "–", "**0.2900**"]
    assert _row(table, "eval_v/sweep-3", "x8_medium", "N8_tau35")[5:] == ["24.50", "–", "–"]
    assert _row(table, "eval_v/sweep-3", "x8_medium", "N4_tau20")[5:] == ["23.00", "–", "–"]
    assert (tmp_path / "out" / "comparison.png").is_file()


def test_wandb_same_run_locally_and_in_wandb(monkeypatch: pytest.MonkeyPatch, two_runs: tuple[Path, Path]) -> None:
    import wandb

    summary = {"eval/celeba_test/x8_medium/N8_tau35/psnr": 24.1}
    fake = _fake_run("eval_a/20261126-053000", "eval_a", "eval_a-20261126-053000", summary)
    monkeypatch.setattr(wandb, "Api", lambda *a, **k: _FakeApi([fake]))
    runs = cmp.load_local_runs([two_runs[0]]) + cmp.load_wandb_runs("me/dr2")
    cmp.unique_labels(runs)
    assert [r.label for r in runs] == [
        "eval_a/20261126-053000 (20261126-053000)",
        "eval_a/20261126-053000 (wandb:eval_a-20261126-053000)",
    ]


def test_wandb_not_logged_in(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import wandb

    def no_login(*args: Any, **kwargs: Any) -> None:
        raise wandb.errors.UsageError("No API key configured. Use `wandb login` to log in.")

    monkeypatch.setattr(wandb, "Api", no_login)
    with pytest.raises(cmp.CompareError, match="wandb login") as info:
        cmp.load_wandb_runs("me/dr2")
    assert "WANDB_API_KEY" in str(info.value) and "runs/<experiment>/<run>" in str(info.value)
    assert cli_main(["compare", "--out", str(tmp_path / "out"), "--wandb-project", "me/dr2"]) == 2
    assert "cannot read W&B project 'me/dr2'" in capsys.readouterr().err


def test_wandb_network_error_while_iterating(monkeypatch: pytest.MonkeyPatch) -> None:
    import wandb

    class OfflineApi:
        def runs(self, path: str, filters: Any = None) -> Any:
            raise ConnectionError("Max retries exceeded with url: /graphql")

    monkeypatch.setattr(wandb, "Api", OfflineApi)
    with pytest.raises(cmp.CompareError, match="ConnectionError.*\n.*wandb login"):
        cmp.load_wandb_runs("me/dr2")


def test_wandb_no_eval_runs_and_bad_path(monkeypatch: pytest.MonkeyPatch) -> None:
    import wandb

    monkeypatch.setattr(wandb, "Api", lambda *a, **k: _FakeApi([_fake_run("r", None, "r", {"train/loss": 1.0})]))
    with pytest.raises(cmp.CompareError, match="no run in W&B project 'me/dr2'.*wandb sync"):
        cmp.load_wandb_runs("me/dr2")
    with pytest.raises(cmp.CompareError, match="ENTITY/PROJECT"):
        cmp.load_wandb_runs("a/b/c")


def test_published_rows_are_shown_marked_and_never_ranked(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    # measured LPIPS worse than the paper's: the best mark still goes to a measured row
    ours = _write_run(
        runs,
        "eval_a",
        "r",
        [
            _entry("x16 (paper)", "N8_tau35", lpips=0.45, fid_ffhq512=70.0),
            _entry("x16 (paper)", "N4_tau22", lpips=0.50, fid_ffhq512=72.0),
        ],
    )
    result = cmp.compare([ours], None, tmp_path / "out", plot=False, published=["dr2_cvpr2023"])
    published = [row for row in result.rows if row.published]
    assert {(r.setting, r.split) for r in published} >= {("DR2+VQFR", "x16 (paper)"), ("DR2+SPAR", "x8 (paper)")}
    assert all(r.run == "published: dr2_cvpr2023" for r in published)
    assert "**0.4500**" in result.markdown
    assert "**0.3893**" not in result.markdown and "**0.5000**" not in result.markdown
    # the paper's FID (unstated reference) has its own column, never ours
    assert "FID (paper) ↓" in result.markdown and "fid_paper" in result.metrics and "fid_ffhq512" in result.metrics
    assert not any(r.metrics.get("fid_ffhq512") for r in published)
    text = parse_page((tmp_path / "out" / "comparison.html").read_text()).text
    assert "CVPR 2023" in text and "degradation ranges" in text and "never ranked" in text


def test_published_table_errors_name_the_file_and_key(tmp_path: Path) -> None:
    from lightning_dr2.config.loader import ConfigError
    from lightning_dr2.published import load_published

    with pytest.raises(ConfigError, match="not found.*dr2_cvpr2023"):
        load_published("no_such_table")
    bad = tmp_path / "bad.yaml"
    bad.write_text("citation: x\nrows:\n  - {method: M, set: s, split: a, metrics: {psnrr: 1.0}}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: rows\[0\] .*psnrr"):
        load_published(bad)
    bad.write_text("citation: x\nrowz: []\n")
    with pytest.raises(ConfigError, match="rowz"):
        load_published(bad)
