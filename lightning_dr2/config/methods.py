"""Method names of `eval methods=[...]` and `restore method=...`: what runs, by one naming rule.

- `DR2`: DR2 alone (its output upsampled, as with `enhancer.name=none`);
- `DR2+<name>`: DR2 followed by the registry network <name> (`nets.restorers.RESTORERS`) as the enhancer;
- `<name>`: the registry network alone on the LQ inputs, fed as its own inference script feeds it (a baseline).

A network's weights and options come from its `restorers` entry (`restorers=[{name: gfpgan_v1.4, weights: F}]`),
else from `enhancer.*` when `enhancer.name` is that network, else the registry's released file and defaults:
one place (`restorer_choice`) answers "which file and options does <name> run with" for every method.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lightning_dr2.config.loader import Checks
from lightning_dr2.nets.restorers import RESTORERS

DR2 = "DR2"
NONE = "none"


@dataclass(frozen=True)
class Method:
    """One parsed method name: the row label, whether DR2 runs first, and the registry network (None: DR2 alone)."""

    name: str
    dr2: bool
    network: str | None

    @property
    def baseline(self) -> bool:
        return not self.dr2


def parse_method(name: str) -> Method:
    """`DR2`, `DR2+<registry name>` or `<registry name>`; anything else is a ValueError listing the registered."""
    registered = f"registered networks: {RESTORERS.names()}"
    if name == DR2:
        return Method(name, True, None)
    if name.startswith(f"{DR2}+"):
        network = name[len(DR2) + 1 :]
        if network == NONE:
            raise ValueError(f"method {name!r}: DR2 alone is the method 'DR2'")
        if network not in RESTORERS:
            raise ValueError(f"method {name!r}: unknown network {network!r} after 'DR2+'; {registered}")
        return Method(name, True, network)
    if name not in RESTORERS:
        raise ValueError(f"unknown method {name!r}: use DR2, DR2+<network> or <network>; {registered}")
    return Method(name, False, name)


def check_method(c: Checks, key: str, name: str) -> Method:
    """`name` parses; else an error naming `key`, the bad name and the registered networks."""
    try:
        return parse_method(name)
    except ValueError as err:
        c.fail(key, name, f"is not a method: {err}")
        raise  # c.fail raises; for the type checker


def check_methods(c: Checks, key: str, names: list[str]) -> list[Method]:
    """Every name parses and none repeats (errors name `key`, the bad entry and the registered networks)."""
    methods = [check_method(c, f"{key}[{i}]", name) for i, name in enumerate(names)]
    repeated = sorted({m for m in names if names.count(m) > 1})
    if repeated:
        c.fail(key, names, f"lists {repeated} more than once: each method is one row")
    return methods


def check_restorers(c: Checks, key: str) -> None:
    """`restorers` entries name registered networks, once each."""
    names = [entry["name"] for entry in c.value(key)]
    for i, name in enumerate(names):
        if name not in RESTORERS:
            c.fail(f"{key}[{i}].name", name, f"is not a registered network: {RESTORERS.names()}")
    if len(set(names)) != len(names):
        c.fail(key, names, "names a network more than once: give one entry per network")


def restorer_choice(cfg: Any, network: str) -> dict[str, Any]:
    """{"name", "weights", "options", "size"} network <name> runs with (see the module docstring)."""
    from omegaconf import OmegaConf

    for entry in cfg.get("restorers", []):
        if entry.name == network:
            return OmegaConf.to_container(entry, resolve=True)  # type: ignore[return-value]
    if cfg.enhancer.name == network:
        return OmegaConf.to_container(cfg.enhancer, resolve=True)  # type: ignore[return-value]
    return {"name": network, "weights": None, "options": {}, "size": None}
