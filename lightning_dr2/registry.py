"""The one registry convention: named entries of one kind, looked up with an error that lists what exists.

Restoration networks (`nets.restorers.RESTORERS`) and metrics (`metrics.catalogue.METRICS`) are both a
`Registry` of frozen dataclass entries, so every "unknown name" reads the same and every listing (CLI
help, `weights`, docs) walks the same object. Light on purpose: no torch, no project imports.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class UnknownName(ValueError):
    """A name that no entry of the registry has; the message lists the registered ones."""


class Registry(Generic[T]):
    """An ordered name -> entry mapping of one `kind` ("restoration network", "metric")."""

    def __init__(self, kind: str, entries: Iterable[tuple[str, T]] = ()) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        for name, entry in entries:
            self.add(name, entry)

    def add(self, name: str, entry: T) -> T:
        """Register `entry` under `name`; a second entry with the same name is an error, never a silent swap."""
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = entry
        return entry

    def __getitem__(self, name: str) -> T:
        if name not in self._entries:
            raise UnknownName(f"unknown {self.kind} {name!r}; registered: {list(self._entries)}")
        return self._entries[name]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        return list(self._entries)

    def items(self) -> list[tuple[str, T]]:
        return list(self._entries.items())

    def values(self) -> list[T]:
        return list(self._entries.values())

    def check(self, names: Iterable[str]) -> None:
        """Every name must be registered; the error names the unknown ones and lists the registered."""
        unknown = [n for n in names if n not in self._entries]
        if unknown:
            raise UnknownName(f"unknown {self.kind}s {unknown}; registered: {list(self._entries)}")
