"""The one catalogue of metric metadata: name, title, direction, format, paired or not, weight files, builder.

Read by the metric suite (what to build, what needs ground truth, which file enables a metric), by `eval` and
`compare` and the report writer (titles, arrows, formats, best-value direction) and by the config defaults.
`METRICS` is a `lightning_dr2.registry.Registry`, like the restoration networks. Light on purpose (no torch
at import): the config schemas and compare import it.

FID is one metric but its number depends on the reference statistics, so its result key names the
reference: `fid_gt` (the split's own ground truth) or `fid_<reference>` (e.g. `fid_ffhq512` for BasicSR's
FFHQ-512 statistics, the papers' column). Results written before this rule carry a plain `fid`.

Logged results (W&B, the evaluator's JSON) are keyed `eval/<set>/<split>[/<setting>]/<metric>`: `metric_key`
builds such a key and `parse_metric_key` reads one back, the only places that know its layout.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightning_dr2.registry import Registry


@dataclass(frozen=True)
class MetricInfo:
    """What every consumer needs to know about one metric."""

    name: str
    title: str
    higher_is_better: bool
    fmt: str  # str.format spec of one value in tables
    paired: bool  # needs the ground truth of each image
    weights: tuple[str, ...]  # weight files that enable it (empty: none needed)
    build: Callable[..., Any]  # build(lpips_net=, weights_dir=, random_networks=, fid_reference=) -> Metric
    default: bool = True  # in the default `metrics` list (protocol variants are asked for by name)

    @property
    def arrow(self) -> str:
        return "↑" if self.higher_is_better else "↓"


def _psnr(**_: Any) -> Any:
    from lightning_dr2.metrics.psnr_ssim import PSNR

    return PSNR()


def _ssim(**_: Any) -> Any:
    from lightning_dr2.metrics.psnr_ssim import SSIM

    return SSIM()


def _psnr_vqfr(**_: Any) -> Any:
    from lightning_dr2.metrics.psnr_ssim import PSNR

    return PSNR(protocol="vqfr")


def _ssim_vqfr(**_: Any) -> Any:
    from lightning_dr2.metrics.psnr_ssim import SSIM

    return SSIM(protocol="vqfr")


def _lpips(lpips_net: str = "vgg", weights_dir: str | None = None, random_networks: bool = False, **_: Any) -> Any:
    from lightning_dr2.metrics.lpips import LPIPSMetric

    return LPIPSMetric(net=lpips_net, weights_dir=weights_dir, pretrained_backbone=not random_networks)


def _fid(fid_reference: Any = None, weights_dir: str | None = None, random_networks: bool = False, **_: Any) -> Any:
    from lightning_dr2.metrics.fid import FID
    from lightning_dr2.nets.inception import FIDInceptionV3

    network = FIDInceptionV3().eval() if random_networks else None
    return FID(fid_reference, network=network, weights_dir=weights_dir)


def _deg(weights_dir: str | None = None, random_networks: bool = False, **_: Any) -> Any:
    from lightning_dr2.metrics.identity import IdentityDistance
    from lightning_dr2.nets.arcface import ResNetFace18

    network = ResNetFace18().eval() if random_networks else None
    return IdentityDistance(network=network, weights_dir=weights_dir)


_ALL = (
    MetricInfo("psnr", "PSNR", True, "{:.2f}", True, (), _psnr),
    MetricInfo("ssim", "SSIM", True, "{:.4f}", True, (), _ssim),
    MetricInfo("lpips", "LPIPS", False, "{:.4f}", True, ("vgg16-397923af.pth", "alexnet-owt-7be5be79.pth"), _lpips),
    MetricInfo("fid", "FID", False, "{:.2f}", False, ("pt_inception-2015-12-05-6726825d.pth",), _fid),
    MetricInfo("deg", "Deg", False, "{:.2f}", True, ("resnet18_110.pth",), _deg),
    # VQFR's metric script corrects the output's per-channel mean/var to the GT's first: its own columns.
    MetricInfo("psnr_vqfr", "PSNR (VQFR protocol)", True, "{:.2f}", True, (), _psnr_vqfr, default=False),
    MetricInfo("ssim_vqfr", "SSIM (VQFR protocol)", True, "{:.4f}", True, (), _ssim_vqfr, default=False),
)
METRICS: Registry[MetricInfo] = Registry("metric", ((m.name, m) for m in _ALL))  # canonical column order

FID_GT = "gt"  # FID against the statistics of the split's own ground truth
# Reference statistics with a short, well-known label (others are labelled by their file stem).
KNOWN_FID_REFERENCES = {"inception_FFHQ_512-f7b384ab.pth": "ffhq512", "inception_FFHQ_512.pth": "ffhq512"}
REFERENCE_TITLES = {FID_GT: "GT", "ffhq512": "FFHQ-512"}


def default_metrics() -> list[str]:
    """The papers' metrics (BasicSR protocol), in the canonical order: the `metrics` default of eval and evaluator."""
    return [name for name, info in METRICS.items() if info.default]


def check_names(names: list[str] | tuple[str, ...]) -> None:
    """Every name must be a catalogue metric (`registry.UnknownName`, a ValueError, lists them)."""
    METRICS.check(names)


def fid_label(reference: str | Path | None) -> str:
    """`gt` without reference statistics; else a short name of the reference file (`ffhq512`, a file stem)."""
    if reference is None:
        return FID_GT
    name = Path(str(reference)).name
    if name in KNOWN_FID_REFERENCES:
        return KNOWN_FID_REFERENCES[name]
    return re.sub(r"[^a-z0-9]+", "_", Path(name).stem.lower()).strip("_") or "ref"


def result_key(name: str, fid_reference: str | Path | None = None) -> str:
    """The key a metric's value is stored under in results: the name, except FID which names its reference."""
    return f"fid_{fid_label(fid_reference)}" if name == "fid" else name


def metric_of(key: str) -> MetricInfo | None:
    """The catalogue entry of a result key (`fid_ffhq512` -> FID); None for diagnostics such as deg_identical."""
    if key in METRICS:
        return METRICS[key]
    if key.startswith("fid_"):
        return METRICS["fid"]
    return None


def title(key: str) -> str:
    """Column title of a result key, with FID's reference: `FID (FFHQ-512)`, `FID (GT)`."""
    info = metric_of(key)
    if info is None:
        raise KeyError(f"'{key}' is not a metric result key; metrics: {list(METRICS)}")
    if info.name == "fid" and key != "fid":
        ref = key[len("fid_") :]
        return f"FID ({REFERENCE_TITLES.get(ref, ref)})"
    return info.title


def header(key: str) -> str:
    return f"{title(key)} {metric_of(key).arrow}"  # type: ignore[union-attr]


def format_value(key: str, value: float | None, missing: str = "–") -> str:
    return missing if value is None else metric_of(key).fmt.format(value)  # type: ignore[union-attr]


def column_order(keys: list[str] | set[str]) -> list[str]:
    """Metric result keys in canonical order (FID columns sorted by reference); non-metric keys dropped."""
    order = METRICS.names()
    keyed = [k for k in keys if metric_of(k) is not None]
    return sorted(keyed, key=lambda k: (order.index(metric_of(k).name), k))  # type: ignore[union-attr]


# ------------------------------------------------------------------------------------------ result keys

KEY_ROOT = "eval"


@dataclass(frozen=True)
class MetricKey:
    """The parts of a logged result key `eval/<set>/<split>[/<setting>]/<metric>`; `setting` is "" when the key
    has no setting level (a run with one setting); `metric` is a result key (`psnr`, `fid_ffhq512`) or a
    diagnostic logged beside them (`deg_identical`)."""

    set: str
    split: str
    metric: str
    setting: str = ""


def split_key(set_name: str, split: str, setting: str = "") -> str:
    """`eval/<set>/<split>[/<setting>]`: the prefix of one split's results (its metrics, grid and table)."""
    parts = (set_name, split, setting) if setting else (set_name, split)
    bad = [part for part in parts if not part or "/" in part]
    if bad:
        raise ValueError(
            f"cannot build a result key from set={set_name!r}, split={split!r}, setting={setting!r}: "
            f"{bad} must be non-empty and contain no '/' (rename the set or split)"
        )
    return "/".join((KEY_ROOT, *parts))


def metric_key(set_name: str, split: str, metric: str, setting: str = "") -> str:
    """`eval/<set>/<split>[/<setting>]/<metric>`, the key a result is logged under; `parse_metric_key` inverts it."""
    if not metric or "/" in metric:
        raise ValueError(f"cannot build a result key for metric {metric!r}: it must be non-empty and without '/'")
    return f"{split_key(set_name, split, setting)}/{metric}"


def parse_metric_key(key: str) -> MetricKey:
    """The parts of a `metric_key`; anything else is a ValueError naming the key and the expected layout."""
    parts = str(key).split("/")
    if parts[0] != KEY_ROOT or len(parts) not in (4, 5) or not all(parts):
        raise ValueError(f"{key!r} is not a result key {KEY_ROOT}/<set>/<split>[/<setting>]/<metric>")
    return MetricKey(parts[1], parts[2], parts[-1], parts[3] if len(parts) == 5 else "")
