"""Atomic writes of any file the framework writes, JSON and CSV tables.

Every file goes through `atomic_write` (a temporary file in the same folder, then `os.replace`): an
interrupted run never leaves a half-written file under the real name, which a resume would otherwise take
as finished. Temporary names start with '.', which `list_images` ignores.
"""

from __future__ import annotations

import csv
import json
import os
import secrets
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any


def atomic_write(path: str | os.PathLike, data: bytes | str | Callable[[Path], Any]) -> Path:
    """Write `data` to `path` so that readers see the old file or the complete new one, never a part.

    `data` is bytes, text (UTF-8), or a callable that writes the file at the temporary path it is given
    (e.g. `lambda tmp: torch.save(state, tmp)`); whatever it raises propagates and the temporary file is
    removed. The parent folder is created. Returns `path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Unique per process and call (ranks and threads may write side by side); opened with the default
    # mode, so the file gets the user's umask like any other output (tempfile.mkstemp would force 0600).
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        if callable(data):
            data(tmp)
        else:
            with open(tmp, "xb") as fh:
                fh.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> Path:
    """JSON file (trailing newline), written atomically."""
    return atomic_write(path, json.dumps(obj, indent=indent) + "\n")


def write_table(path: str | os.PathLike, rows: Sequence[Mapping[str, Any]]) -> Path | None:
    """CSV with one column per key seen in any row (first-seen order), written atomically; None if no rows."""
    if not rows:
        return None
    keys = list(dict.fromkeys(k for row in rows for k in row))

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=keys)
            writer.writeheader()
            writer.writerows(rows)

    return atomic_write(path, write)
