"""The status of every registered weight file (present? where? checksum ok?) as rows and as a table."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lightning_dr2.weights.checksum import hash_matches, sha256sum
from lightning_dr2.weights.lookup import (
    MissingWeightsError,
    find_weight,
    how_to_get,
    search_dirs,
    torch_hub_checkpoints,
)
from lightning_dr2.weights.registry import WEIGHTS


def list_weights(weights_dir: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """Status of every registered file: where it is, its sha256 and whether it matches (JSON-ready dicts).

    Hashes are computed for present files (slow for big checkpoints, but it is what tells a user that a
    download is truncated or the wrong file). `checksum_ok` is None when no hash is published.
    """
    rows = []
    for entry in WEIGHTS.values():
        try:
            path: Path | None = find_weight(entry.name, weights_dir)
        except MissingWeightsError:
            path = None
        actual = sha256sum(path) if path is not None else None
        ok = hash_matches(actual, entry.sha256) if actual is not None and entry.sha256 else None
        rows.append(
            {
                "name": entry.name,
                "role": entry.role,
                "description": entry.description,
                "present": path is not None,
                "path": str(path) if path is not None else None,
                "size_bytes": path.stat().st_size if path is not None else None,
                "sha256": actual,
                "expected_sha256": entry.sha256,
                "checksum_ok": ok,
                "urls": list(entry.urls),
                "source": entry.source,
                "used_by": entry.used_by,
            }
        )
    return rows


def _status(row: Mapping[str, Any]) -> str:
    if not row["present"]:
        return "missing"
    if row["checksum_ok"] is None:
        return "present (no published hash)"
    return "ok (sha256 verified)" if row["checksum_ok"] else "BAD CHECKSUM"


def format_table(rows: Sequence[Mapping[str, Any]], weights_dir: str | os.PathLike | None = None) -> str:
    """Plain-text table of `list_weights` rows, then how to get what is missing or broken."""
    header = ("NAME", "ROLE", "STATUS", "PATH / HOW TO GET")
    cells = []
    for row in rows:
        if row["present"]:
            where = row["path"]
        elif row["urls"]:
            where = f"python -m lightning_dr2 weights --fetch {row['name']}"
        else:
            where = "manual download (see below)"
        cells.append((row["name"], row["role"], _status(row), where))
    widths = [max(len(str(c[i])) for c in [header, *cells]) for i in range(3)]
    lines = ["  ".join(str(c[i]).ljust(widths[i]) for i in range(3)) + "  " + str(c[3]) for c in [header, *cells]]

    problems = [r for r in rows if not r["present"] or r["checksum_ok"] is False]
    present = sum(r["present"] for r in rows)
    lines.append("")
    lines.append(f"{present} of {len(rows)} files present. Folders searched (in order; the torch hub cache only")
    lines.append("for torchvision/pytorch-fid files):")
    lines += [f"  - {d.absolute()}" for d in search_dirs(weights_dir)]
    lines.append(f"  - {torch_hub_checkpoints()}")
    for row in problems:
        lines.append("")
        if row["checksum_ok"] is False:
            lines.append(
                f"{row['name']}: sha256 {row['sha256']} does not match the published "
                f"{row['expected_sha256']} "
                "(truncated or wrong file?): delete it and get it again."
            )
        lines.append(f"{row['name']}: {how_to_get(row['name'])}")
    if any(not r["present"] and r["urls"] for r in rows):
        lines.append("")
        lines.append("Fetch every missing file that has a download URL: python -m lightning_dr2 weights --fetch-all")
    return "\n".join(lines)


def missing_files(weights_dir: str | os.PathLike | None = None) -> tuple[list[str], list[str]]:
    """Registered files missing or failing their checksum: (those with a download URL, manual-only ones)."""
    fetchable: list[str] = []
    manual: list[str] = []
    for row in list_weights(weights_dir):
        if not row["present"] or row["checksum_ok"] is False:
            (fetchable if row["urls"] else manual).append(row["name"])
    return fetchable, manual


def needed_rows(needs: Sequence[tuple[str, str]], weights_dir: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """Status of the files a run needs: (file, what needs it) pairs -> one row per file (users joined), present
    or not, where it is, and how to get it. `file` is a registered name (looked up as `find_weight` does) or a
    path; a path that does not exist is missing, and its fix is the path itself."""
    users: dict[str, list[str]] = {}
    for file, user in needs:
        users.setdefault(file, []).append(user)
    rows = []
    for file, needed_by in users.items():
        path: Path | None = Path(file)
        if path.parent == Path(".") and not path.exists():  # a bare name: the weights lookup finds it
            try:
                path = find_weight(file, weights_dir)
            except MissingWeightsError:
                path = None
        elif not path.is_file():
            path = None
        known = Path(file).name in WEIGHTS
        how = how_to_get(Path(file).name) if known else f"the file {file} named in the config: put it there"
        rows.append(
            {
                "name": file,
                "needed_by": list(dict.fromkeys(needed_by)),
                "present": path is not None,
                "path": str(path) if path is not None else None,
                "how_to_get": how,
            }
        )
    return rows


def format_needed(rows: Sequence[Mapping[str, Any]], title: str, weights_dir: str | os.PathLike | None = None) -> str:
    """Plain-text listing of `needed_rows`: every file, what needs it, present or missing, how to get the missing."""
    lines = [title, ""]
    width = max([len(str(r["name"])) for r in rows] + [4])
    for row in rows:
        status = f"present: {row['path']}" if row["present"] else "MISSING"
        lines.append(f"{str(row['name']).ljust(width)}  {status}")
        lines.append(f"{''.ljust(width)}  needed by: {'; '.join(row['needed_by'])}")
    missing = [r for r in rows if not r["present"]]
    lines += ["", f"{len(rows) - len(missing)} of {len(rows)} files present. Folders searched for bare names:"]
    lines += [f"  - {d.absolute()}" for d in search_dirs(weights_dir)]
    for row in missing:
        lines += ["", f"{row['name']}: {row['how_to_get']}"]
    return "\n".join(lines)
