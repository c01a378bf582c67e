"""Outputs that know what made them: fingerprints of (inputs, weights, settings, code) per output file.

A re-run into an existing output folder reuses a file only when the fingerprint recorded for it equals
the one the current settings would give; otherwise the file is recomputed (or, with `reuse=strict`, the
run stops and names the settings that changed). Manifests are JSON lines written as work finishes; a line
torn by a crash is reported with its file and line number and skipped.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from lightning_dr2 import __version__

log = logging.getLogger(__name__)

REUSE_MODES = ("auto", "strict")

MANIFEST = "manifest.json"  # the merged manifest of a predict job's output folder (restore, dr2-cache, eval)


def fingerprint(fields: Mapping[str, Any]) -> str:
    """A short stable hash of everything that determines an output (canonical JSON, code version included)."""
    text = json.dumps({"code": __version__, **fields}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def changed_keys(recorded: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """The settings whose recorded value differs from the current one (missing counts as different)."""
    return sorted(k for k in current if recorded.get(k, object()) != current[k])


def read_jsonl(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """Every record of the JSON-lines files, in order; torn or non-object lines are logged and skipped."""
    records: list[dict[str, Any]] = []
    for path in paths:
        for number, line in enumerate(Path(path).read_text(errors="replace").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                log.warning("%s line %d is not valid JSON (%s); skipping it (torn by a crash?)", path, number, err.msg)
                continue
            if not isinstance(record, dict) or "name" not in record:
                log.warning("%s line %d is not a manifest record; skipping it", path, number)
                continue
            records.append(record)
    return records


class ReuseRefused(ValueError):
    """reuse=strict and a finished output was made with other settings than the current ones."""


def read_manifest(output_dir: str | Path) -> dict[str, Any] | None:
    """The merged manifest of a predict job's output folder ({"settings", "input", "images", "stale"}), or None
    when the folder has none (or a manifest of another kind, e.g. a test set's). Unreadable ones are reported."""
    path = Path(output_dir) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        log.warning("%s is not readable (%s); its images will be made again", path, err)
        return None
    if not isinstance(manifest, dict) or not {"settings", "images"} <= set(manifest):
        return None
    return manifest


def merged_records(output_dir: str | Path) -> dict[str, dict[str, Any]]:
    """Records of the merged manifest, by name; an unreadable manifest counts as empty (its images are then
    made again, never trusted)."""
    images = (read_manifest(output_dir) or {}).get("images", [])
    return {rec["name"]: rec for rec in images if isinstance(rec, dict) and "name" in rec}
