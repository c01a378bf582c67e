"""The registry: every weight file the framework knows, its role, published hash and where to get it (the
entries are data, in files.toml beside this module)."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, from PyPI
    import tomli as tomllib


@dataclass(frozen=True)
class WeightFile:
    """One weight file the framework knows about.

    `sha256` is the full hex digest or a prefix of it (torchvision, pytorch-fid and BasicSR file names
    embed the first 8+ hex digits); None when nobody published one. `urls` are direct, stable download
    links (tried in order); files without one name a page with manual instructions in `source`.
    `hub_cache` marks files that torch.hub caches under the same name, so the torch hub cache is searched.
    `aliases` are other names the same file is distributed under.
    """

    name: str
    role: str
    description: str
    sha256: str | None = None
    urls: tuple[str, ...] = ()
    source: str = ""
    used_by: str = ""
    hub_cache: bool = False
    aliases: tuple[str, ...] = field(default=())


REGISTRY_FILE = Path(__file__).with_name("files.toml")  # the data: one [[file]] table per weight file


def _read_registry(path: Path = REGISTRY_FILE) -> tuple[WeightFile, ...]:
    """The [[file]] tables of `path` as WeightFiles, `{source}` references filled in from its [sources]."""
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    sources: dict[str, str] = data.get("sources", {})

    def filled(text: str) -> str:
        for key, value in sources.items():
            text = text.replace("{" + key + "}", value)
        return text

    files = []
    for entry in data["file"]:
        texts = {k: filled(v) for k, v in entry.items() if k in ("description", "source", "used_by")}
        lists = {k: tuple(entry[k]) for k in ("urls", "aliases") if k in entry}
        files.append(WeightFile(**{**entry, **texts, **lists}))
    return tuple(files)


_REGISTRY = _read_registry()

WEIGHTS: dict[str, WeightFile] = {w.name: w for w in _REGISTRY}
