"""The import structure holds: no import cycles, and no module imports from a layer above its own
(`tools/architecture.py`, whose layer table docs/architecture.md explains)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def architecture():
    spec = importlib.util.spec_from_file_location("architecture", ROOT / "tools" / "architecture.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["architecture"] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules["architecture"]


def test_no_import_cycles_and_no_upward_imports(architecture) -> None:
    modules, edges = architecture.collect(ROOT / "lightning_dr2")
    assert len(modules) > 50 and len(edges) > 300  # the walk found the package
    assert architecture.cycles(modules, edges) == []
    assert architecture.upward(edges) == [], architecture.summary(modules, edges)


def test_the_checker_sees_a_cycle_and_an_upward_import(architecture, tmp_path: Path) -> None:
    package = tmp_path / "lightning_dr2"
    (package / "nets").mkdir(parents=True)
    (package / "jobs").mkdir()
    (package / "__init__.py").write_text("")
    (package / "nets" / "__init__.py").write_text("")
    (package / "jobs" / "__init__.py").write_text("")
    (package / "nets" / "a.py").write_text("def f():\n    from lightning_dr2.jobs.b import g\n")  # lazy, still upward
    (package / "jobs" / "b.py").write_text("from lightning_dr2.nets import a\n")
    modules, edges = architecture.collect(package)
    assert [(e.source, e.target, e.lazy) for e in architecture.upward(edges)] == [("nets.a", "jobs.b", True)]
    assert architecture.cycles(modules, edges) == [["jobs.b", "nets.a"]]
