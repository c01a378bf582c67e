"""Where weight files are looked for, and the error (with how to get the file) when they are not found.

Lookup order (`search_dirs`): an explicit folder, `$DR2_WEIGHTS`, `data/weights` under the current
directory, `data/weights` under the project root, and, for files that torch.hub itself caches
(torchvision backbones, pytorch-fid's Inception), `$TORCH_HOME/hub/checkpoints`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from lightning_dr2.weights.registry import WEIGHTS

PROJECT_ROOT = Path(__file__).resolve().parents[2]
ENV_VAR = "DR2_WEIGHTS"


class MissingWeightsError(FileNotFoundError):
    """A weight file is in no searched folder; the message says where we looked and how to get it."""

    def __init__(self, message: str, name: str = "", searched: Sequence[Path] = ()) -> None:
        super().__init__(message)  # one argument: str() is the message, and the error pickles
        self.name = name
        self.searched = list(searched)


def torch_hub_checkpoints() -> Path:
    """torch.hub's download cache (`$TORCH_HOME/hub/checkpoints`): torchvision and pytorch-fid save there."""
    import torch.hub  # lazy: listing weights should not pay for importing torch unless it must

    return Path(torch.hub.get_dir()) / "checkpoints"


def search_dirs(weights_dir: str | os.PathLike | None = None, name: str | None = None) -> list[Path]:
    """Folders searched for weight files, in order, without duplicates.

    `weights_dir`, `$DR2_WEIGHTS`, `./data/weights`, `<project>/data/weights`; plus the torch hub cache when
    `name` is a registered file that torch.hub caches (torchvision backbones, pytorch-fid Inception).
    """
    dirs: list[Path] = []
    if weights_dir is not None:
        dirs.append(Path(weights_dir))
    if os.environ.get(ENV_VAR):
        dirs.append(Path(os.environ[ENV_VAR]))
    dirs += [Path("data/weights"), PROJECT_ROOT / "data" / "weights"]
    entry = WEIGHTS.get(name) if name is not None else None
    if entry is not None and entry.hub_cache:
        dirs.append(torch_hub_checkpoints())
    unique: list[Path] = []
    seen: set[Path] = set()
    for d in dirs:
        key = d.expanduser().resolve()
        if key not in seen:
            seen.add(key)
            unique.append(d.expanduser())
    return unique


def find_weight(name: str, weights_dir: str | os.PathLike | None = None) -> Path:
    """First existing `name` (or a registered alias) in `search_dirs`; MissingWeightsError if none."""
    entry = WEIGHTS.get(name)
    candidates = (name, *entry.aliases) if entry else (name,)
    dirs = search_dirs(weights_dir, name)
    for d in dirs:
        for candidate in candidates:
            if (d / candidate).is_file():
                return d / candidate
    raise MissingWeightsError(missing_message(name, dirs), name, dirs)


def how_to_get(name: str) -> str:
    """One or two lines telling a user how to obtain `name` (fetch command, URL or manual source)."""
    entry = WEIGHTS.get(name)
    if entry is None:
        return f"'{name}' is not a known weight file of lightning_dr2 (known: {', '.join(sorted(WEIGHTS))})."
    lines = []
    if entry.urls:
        lines.append(
            f"fetch it (downloads {entry.urls[0]} and checks its sha256):\n"
            f"    python -m lightning_dr2 weights --fetch {name}"
        )
    if entry.source:
        lines.append(("or get it manually: " if entry.urls else "manual download: ") + entry.source)
    return "\n".join(lines)


def missing_message(name: str, dirs: Sequence[Path]) -> str:
    """The text of MissingWeightsError: file, role, folders searched, how to get it and where to put it."""
    entry = WEIGHTS.get(name)
    what = f"'{name}' ({entry.role}: {entry.description})" if entry else f"'{name}'"
    searched = "\n".join(f"  - {d.absolute()}" for d in dirs)
    aliases = f" (or under the name {', '.join(entry.aliases)})" if entry and entry.aliases else ""
    return (
        f"weight file {what} not found{aliases}. Searched, in order:\n{searched}\n"
        f"{how_to_get(name)}\n"
        f"Put it in data/weights/ or in the folder named by ${ENV_VAR} (or pass an explicit weights dir). "
        "Nothing is downloaded automatically."
    )


def default_dest() -> Path:
    """Where `fetch` saves files by default: `$DR2_WEIGHTS` if set, else `<project>/data/weights`."""
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    return PROJECT_ROOT / "data" / "weights"
