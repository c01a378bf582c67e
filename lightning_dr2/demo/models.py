"""Which models the demo offers: released weights when present, else the quickstart's tiny networks.

The demo must start on a fresh machine, where no released weight file can be present (they cannot ship),
and still say honestly what it runs. `resolve_models` looks, in order, for
1. the released DR2 UNet (`DR2_FFHQ.pkl`) with every registered restoration network whose released file is
   present as its enhancer (`DR2 + sparnethd`, ...);
2. without it, the quickstart's demo networks shipped in the repository (experiments/quickstart_weights: a
   tiny UNet and enhancer, so the demo runs with no download and no training), then the newest
   `runs/quickstart/<run>` that holds an exported UNet (`make quickstart`) with the tiny enhancer it trained;
3. as baselines, every registered restoration network alone whose released file is present.
What it found and where, or what to run / which files to put where, is `DemoModels.notice`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from lightning_dr2.exports.restorer import read_enhancer_sidecar
from lightning_dr2.exports.sidecar import sidecar_path
from lightning_dr2.jobs.quickstart import SHIPPED_DIR, SHIPPED_ENHANCER, SHIPPED_UNET
from lightning_dr2.nets.restorers import RESTORERS
from lightning_dr2.weights import MissingWeightsError, find_weight, search_dirs

RELEASED_UNET = "DR2_FFHQ.pkl"
QUICKSTART_RUNS = Path("runs") / "quickstart"  # `make quickstart` writes runs/quickstart/<run>/


@dataclass(frozen=True)
class DemoMethod:
    """One choice of the page's method menu: DR2 (+ an enhancer) or a restoration network alone."""

    label: str  # what the menu shows
    unet: Path | None  # the DR2 UNet file; None: a baseline (no DR2 stage)
    network: str = "none"  # registry name of the enhancer / baseline; "none": DR2 alone
    weights: Path | None = None  # its file (a released file or a train-enhancer export)

    @property
    def is_dr2(self) -> bool:
        return self.unet is not None

    def files(self) -> str:
        """The files it loads, for the status line and the page."""
        return " + ".join(str(p) for p in (self.unet, self.weights) if p is not None)


@dataclass
class DemoModels:
    """The methods found (the first is the default) and a notice saying what they are or what is missing."""

    methods: list[DemoMethod] = field(default_factory=list)
    notice: str = ""

    def method(self, label: str) -> DemoMethod:
        for m in self.methods:
            if m.label == label:
                return m
        raise ValueError(f"no demo method {label!r}; available: {[m.label for m in self.methods]}")


def released_networks(weights_dir: str | os.PathLike | None = None) -> dict[str, Path]:
    """Registered restoration networks whose released file is present: name -> file."""
    found: dict[str, Path] = {}
    for name, spec in RESTORERS.items():
        if spec.weights is None or spec.upscale != 1:  # image upsamplers are no face method
            continue
        try:
            found[name] = find_weight(spec.weights, weights_dir)
        except MissingWeightsError:
            continue
    return found


@dataclass(frozen=True)
class QuickstartRun:
    """A `make quickstart` run directory with its exported UNet and (once trained) its tiny enhancer."""

    root: Path
    unet: Path
    enhancer: Path | None


def unet_export_flags(weights: Path) -> dict | None:
    """The network flags of an exported UNet, whose sidecar records {"net": flags, "diffusion": process}
    (`exports.unet`); None for any other file."""
    try:
        record = json.loads(sidecar_path(weights).read_text())
    except (OSError, ValueError):
        return None
    ok = isinstance(record, dict) and isinstance(record.get("net"), dict) and "diffusion" in record
    return record["net"] if ok else None


def _newest(paths: list[Path]) -> Path | None:
    return max(paths, key=lambda p: p.stat().st_mtime) if paths else None


def newest_quickstart_run(runs: str | os.PathLike = QUICKSTART_RUNS) -> QuickstartRun | None:
    """The quickstart run under `runs` (runs/quickstart) whose UNet was exported last, or None.

    Exports are recognised by their JSON, not their file names: a UNet's sidecar in `<run>/export/`, and an
    enhancer's (train-enhancer's, `exports.restorer`) anywhere under the run, the newest one."""
    runs = Path(runs)
    unet = _newest([p for p in runs.glob("*/export/*.pt") if unet_export_flags(p)]) if runs.is_dir() else None
    if unet is None:
        return None
    root = unet.parent.parent
    enhancer = _newest([p for p in root.glob("**/export/*.pt") if read_enhancer_sidecar(p) is not None])
    return QuickstartRun(root, unet, enhancer)


def enhancer_network(export: Path) -> str:
    """The registry name of the network a train-enhancer export holds (its JSON says)."""
    record = read_enhancer_sidecar(export)
    return str(record["generator"]) if record else "enhancer"


def _dr2_methods(unet: Path, enhancers: list[tuple[str, str, Path]], suffix: str) -> list[DemoMethod]:
    """DR2 + each (label, registry name, file) enhancer; DR2 alone when there is none."""
    methods = [DemoMethod(f"DR2 + {label}{suffix}", unet, name, path) for label, name, path in enhancers]
    return methods or [DemoMethod(f"DR2 alone{suffix}", unet)]


def shipped_quickstart_run(unet: Path = SHIPPED_UNET, enhancer: Path = SHIPPED_ENHANCER) -> QuickstartRun | None:
    """The quickstart's shipped demo networks as a run, or None when the UNet export is not there."""
    if unet_export_flags(unet) is None:
        return None
    return QuickstartRun(unet.parent, unet, enhancer if read_enhancer_sidecar(enhancer) is not None else None)


def _tiny_methods(run: QuickstartRun, suffix: str) -> list[DemoMethod]:
    """DR2 + the run's tiny enhancer (DR2 alone when it has none), labelled with `suffix`."""
    tiny = []
    if run.enhancer is not None:
        network = enhancer_network(run.enhancer)
        tiny.append((f"tiny {network}", network, run.enhancer))
    return _dr2_methods(run.unet, tiny, suffix)


def resolve_models(
    weights_dir: str | os.PathLike | None = None,
    runs: str | os.PathLike = QUICKSTART_RUNS,
    shipped: tuple[Path, Path] | None = (SHIPPED_UNET, SHIPPED_ENHANCER),
) -> DemoModels:
    """The demo's methods and the notice the page shows (see the module docstring for the order); `shipped`:
    the quickstart's demo (UNet, enhancer) exports, used when present (None: not looked for)."""
    released = released_networks(weights_dir)
    baselines = [DemoMethod(f"{name} alone (released)", None, name, path) for name, path in sorted(released.items())]
    try:
        unet = find_weight(RELEASED_UNET, weights_dir)
    except MissingWeightsError:
        unet = None
    if unet is not None:
        enhancers = [(name, name, path) for name, path in sorted(released.items())]
        methods = _dr2_methods(unet, enhancers, " (released)")
        notice = f"Released weights: DR2 UNet {unet}" + "".join(f", {n} {p}" for n, p in sorted(released.items()))
        return DemoModels(methods + baselines, notice + ".")
    where = ", ".join(str(d) for d in search_dirs(weights_dir))
    demo = shipped_quickstart_run(*shipped) if shipped else None
    run = newest_quickstart_run(runs)
    if demo is None and run is None:
        missing = (
            f"No models found: no released {RELEASED_UNET} (searched {where}), no quickstart demo networks in "
            f"{SHIPPED_DIR} and no quickstart run under {runs}/. Run `make quickstart` (tiny models trained on this "
            "CPU in minutes), or put DR2_FFHQ.pkl and an enhancer's released file (e.g. SPARNetHD_FFHQ_DR2aug.pth) "
            "in data/weights/ or $DR2_WEIGHTS (`python -m lightning_dr2 weights` lists them), then restart the demo."
        )
        return DemoModels(baselines, missing if not baselines else f"{missing} Only baselines are available.")
    methods, used = [], []
    if demo is not None:
        methods += _tiny_methods(demo, " (quickstart demo networks)")
        used.append(
            f"the quickstart's demo networks shipped in {demo.root} (UNet {demo.unet}; enhancer {demo.enhancer})"
        )
    if run is not None:
        methods += _tiny_methods(run, f" (quickstart run {run.root.name})")
        enhancer = run.enhancer or "not trained yet: DR2 alone"
        used.append(f"the quickstart run {run.root} (UNet {run.unet}; enhancer {enhancer})")
    size = unet_export_flags((demo or run).unet).get("image_size", "?")  # type: ignore[union-attr]
    notice = (
        f"No released {RELEASED_UNET} (searched {where}): using the TINY models of {' and '.join(used)}. They were "
        f"trained on a CPU on generated cartoon faces at {size} px: expect blurry, cartoon-like faces, not the "
        "paper's results. For those, put DR2_FFHQ.pkl and SPARNetHD_FFHQ_DR2aug.pth in data/weights/."
    )
    return DemoModels(methods + baselines, notice)
