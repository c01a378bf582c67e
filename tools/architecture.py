"""The import structure of lightning_dr2: layers, import cycles, imports that run upward, and its picture.

    python tools/architecture.py check                  # exit 1 on a cycle or an upward import
    python tools/architecture.py draw docs/architecture.png

Every `import` / `from ... import` of a project module counts, including those inside functions (a lazy
import is still a dependency). Layers are listed low to high in `LAYERS`; a module may import from its own
layer and the layers below it. `tests/test_architecture.py` runs the check, so a new upward import or cycle
fails the suite; the picture in docs/architecture.md is drawn by `draw` (needs Graphviz's `dot`).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "lightning_dr2"
ROOT = Path(__file__).resolve().parents[1]

# Low to high: (layer, what it is, module prefixes relative to the package). The longest prefix wins.
LAYERS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    (
        "base",
        "files, images, weights, config loader, provenance: no torch networks",
        (
            "__init__",
            "files",
            "outputs",
            "image_io",
            "registry",
            "provenance",
            "parallel",
            "runinfo",
            "checkpoints",
            "weights",
            "config.loader",
            "config",  # the package file itself (imports nothing)
        ),
    ),
    ("networks", "plain nn.Modules and diffusion math", ("nets", "diffusion")),
    ("exports", "network files: read, write, locate, identify", ("exports",)),
    ("algorithms", "DR2, metrics, training losses, faces", ("dr2", "metrics", "losses", "faces")),
    ("data", "datasets, reports, published numbers", ("datasets", "report", "published")),
    (
        "schemas",
        "job configs with their checks",
        (
            "config.run",
            "config.sets",
            "config.ddpm",
            "config.enhancer",
            "config.pipeline",
            "config.recipes",
            "config.faces",
        ),
    ),
    ("lightning", "LightningModules", ("modules",)),
    ("callbacks", "Lightning callbacks, loggers", ("callbacks", "loggers")),
    ("jobs", "the jobs behind the commands", ("jobs",)),
    ("entry", "command line and demo", ("cli", "__main__", "demo")),
)


@dataclass(frozen=True)
class Edge:
    source: str  # importing module, relative to the package (e.g. "jobs.restore")
    target: str  # imported module, relative
    line: int
    lazy: bool  # inside a function


def module_name(path: Path, package_dir: Path) -> str:
    rel = path.relative_to(package_dir).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str | None:
    """The absolute dotted module a `from X import ...` refers to (relative imports resolved)."""
    if node.level == 0:
        return node.module
    base = f"{PACKAGE}.{module}".split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def collect(package_dir: Path) -> tuple[set[str], list[Edge]]:
    """(modules, import edges between them) of the package at `package_dir`."""
    files = sorted(package_dir.rglob("*.py"))
    modules = {module_name(f, package_dir) for f in files}
    edges: list[Edge] = []
    for f in files:
        source = module_name(f, package_dir)
        tree = ast.parse(f.read_text(), str(f))
        lazy_lines = {
            n.lineno
            for fn in ast.walk(tree)
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
            for n in ast.walk(fn)
            if isinstance(n, (ast.Import, ast.ImportFrom))
        }
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(source, f.name == "__init__.py", node)
                if base is None:
                    continue
                # `from pkg import submodule` depends on the submodule; `from mod import name` on mod.
                targets = [f"{base}.{a.name}" if _known(f"{base}.{a.name}", modules) else base for a in node.names]
            for target in targets:
                if target == PACKAGE or target.startswith(PACKAGE + "."):
                    rel = target[len(PACKAGE) + 1 :] if target != PACKAGE else "__init__"
                    rel = _nearest_module(rel, modules)
                    if rel != source:
                        edges.append(Edge(source, rel, node.lineno, node.lineno in lazy_lines))
    return modules, edges


def _known(dotted: str, modules: set[str]) -> bool:
    return dotted[len(PACKAGE) + 1 :] in modules


def _nearest_module(rel: str, modules: set[str]) -> str:
    parts = rel.split(".")
    while parts and ".".join(parts) not in modules:
        parts.pop()
    return ".".join(parts) or "__init__"


def layer_of(module: str) -> int:
    best, index = -1, -1
    for i, (_, _, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, index = len(prefix), i
    if index < 0:
        raise SystemExit(f"module {PACKAGE}.{module} is in no layer: add it to LAYERS in {__file__}")
    return index


def upward(edges: Iterable[Edge]) -> list[Edge]:
    """Imports from a lower layer to a higher one."""
    return [e for e in edges if layer_of(e.target) > layer_of(e.source)]


def cycles(modules: set[str], edges: Iterable[Edge]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan's algorithm)."""
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for e in edges:
        graph[e.source].add(e.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


# Layers drawn as one box each (their modules listed in the box): many small modules that everything uses.
MERGED_LAYERS = ("base", "schemas")


def unit_of(module: str) -> str:
    """The box a module is drawn in: its layer for the merged layers, else its subpackage (`jobs`, `nets`) or
    itself for a top-level module."""
    layer = LAYERS[layer_of(module)][0]
    return layer if layer in MERGED_LAYERS else module.split(".")[0]


def _label(unit: str, modules: set[str]) -> str:
    if unit not in MERGED_LAYERS:
        return unit
    members = sorted(
        {m.split(".")[-1] if unit == "schemas" else m.split(".")[0] for m in modules if unit_of(m) == unit}
    )
    members = [m for m in members if m != "__init__"]
    lines = [", ".join(members[i : i + 4]) for i in range(0, len(members), 4)]
    return f"{unit}\\n" + "\\n".join(lines)


def dot_source(modules: set[str], edges: list[Edge], title: str) -> str:
    """Graphviz source: one box per package/top-level module, one row per layer (bottom = base), edge labels =
    number of imports; upward imports red, edges inside an import cycle dashed red."""
    cyclic = {m for group in cycles(modules, edges) for m in group}
    units: dict[str, int] = {}
    for m in modules:
        units[unit_of(m)] = layer_of(m)
    counts: Counter[tuple[str, str]] = Counter()
    bad: set[tuple[str, str]] = set()
    loops: set[tuple[str, str]] = set()
    for e in edges:
        key = (unit_of(e.source), unit_of(e.target))
        if key[0] == key[1]:
            continue
        counts[key] += 1
        if layer_of(e.target) > layer_of(e.source):
            bad.add(key)
        if e.source in cyclic and e.target in cyclic:
            loops.add(key)
    lines = [
        "digraph G {",
        f'  label="{title}"; labelloc=t; fontsize=20; rankdir=BT; newrank=true; nodesep=0.25; ranksep=0.6;',
        '  node [shape=box, style="rounded,filled", fillcolor="#eef3fb", fontname="Helvetica", fontsize=11];',
        '  edge [color="#9aa5b1", fontsize=8, fontname="Helvetica", arrowsize=0.6];',
    ]
    for i, (name, what, _) in enumerate(LAYERS):
        members = sorted(u for u, layer in units.items() if layer == i)
        if not members:
            continue
        lines.append(f'  subgraph cluster_{i} {{ label="{i}. {name}: {what}"; fontsize=10; color="#d0d7de";')
        boxes = " ".join(f'"{u}" [label="{_label(u, modules)}"];' for u in members)
        lines.append("    rank=same; " + boxes + " }")
    for (a, b), n in sorted(counts.items()):
        style = ""
        if (a, b) in bad:
            style = ', color="#d73a49", fontcolor="#d73a49", penwidth=2, constraint=false'  # keep the rows
        if (a, b) in loops:
            style += ', style=dashed, color="#d73a49"'
        lines.append(f'  "{a}" -> "{b}" [label="{n}"{style}];')
    lines.append("}")
    return "\n".join(lines)


def summary(modules: set[str], edges: list[Edge]) -> str:
    ups, loops = upward(edges), cycles(modules, edges)
    out = [f"{len(modules)} modules, {len(edges)} imports, {len(loops)} import cycles, {len(ups)} upward imports"]
    out += [f"  cycle: {' -> '.join(g)}" for g in loops]
    out += [
        f"  upward: {e.source} ({LAYERS[layer_of(e.source)][0]}) -> {e.target} ({LAYERS[layer_of(e.target)][0]})"
        f" line {e.line}{' (lazy)' if e.lazy else ''}"
        for e in ups
    ]
    return "\n".join(out)


def main(argv: list[str]) -> int:
    package_dir = ROOT / PACKAGE
    modules, edges = collect(package_dir)
    if argv[:1] == ["check"]:
        print(summary(modules, edges))
        return 1 if upward(edges) or cycles(modules, edges) else 0
    if argv[:1] == ["draw"] and len(argv) >= 2:
        title = argv[2] if len(argv) > 2 else "lightning_dr2 imports"
        out = Path(argv[1])
        subprocess.run(
            ["dot", "-Tpng", "-Gdpi=110", "-o", str(out)],
            input=dot_source(modules, edges, title),
            text=True,
            check=True,
        )
        print(f"{out}\n{summary(modules, edges)}")
        return 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
