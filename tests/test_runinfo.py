"""Run hygiene: every start of a job records command line, code version, packages and machine."""

from __future__ import annotations

import json
import subprocess

from lightning_dr2.config.loader import PROJECT_ROOT
from lightning_dr2.runinfo import record_run_info


def test_each_start_appends_an_entry(tmp_path):
    path = record_run_info(tmp_path)
    record_run_info(tmp_path)
    attempts = json.loads(path.read_text())["attempts"]
    assert len(attempts) == 2
    entry = attempts[-1]
    for key in ("command", "git", "packages", "host", "cpu", "accelerators", "python", "time"):
        assert key in entry, key
    assert entry["packages"]["torch"]
    assert not list(tmp_path.glob("*.tmp"))


def test_git_commit_is_the_checkout_head(tmp_path):
    head = subprocess.run(["git", "-C", str(PROJECT_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    entry = json.loads(record_run_info(tmp_path).read_text())["attempts"][0]
    if head.returncode == 0:
        assert entry["git"]["commit"] == head.stdout.strip()
        assert isinstance(entry["git"]["dirty"], bool)
    else:
        assert entry["git"]["commit"] is None


def test_damaged_record_is_replaced_not_fatal(tmp_path):
    (tmp_path / "run_info.json").write_text('{"attempts": [')  # torn by a crash
    attempts = json.loads(record_run_info(tmp_path).read_text())["attempts"]
    assert len(attempts) == 1
