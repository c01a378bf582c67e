"""Every file an eval run needs, and for what: `python -m lightning_dr2 weights --for <recipe>` lists them (present
or not, where to get each), and `eval` with `methods` checks them before any work (one error naming every missing
file, or with skip_missing_weights=true the rows that need them are skipped with a note)."""

from __future__ import annotations

from typing import Any

from lightning_dr2.config.methods import parse_method, restorer_choice
from lightning_dr2.exports.locate import RANDOM
from lightning_dr2.exports.unet import DEFAULT_UNET_FILE
from lightning_dr2.metrics.catalogue import metric_of
from lightning_dr2.nets.restorers import RESTORERS

LPIPS_BACKBONES = {"vgg": "vgg16-397923af.pth", "alex": "alexnet-owt-7be5be79.pth"}


def eval_needs(cfg: Any) -> list[tuple[str, str]]:
    """(file, what needs it) for an EvalConfig: the UNet (when DR2 runs), each method's network file (or the
    enhancer's), the metric networks (unless random_metric_networks) and each set's FID statistics."""
    needs: list[tuple[str, str]] = []
    methods = [parse_method(m) for m in cfg.methods]
    dr2_users = [m.name for m in methods if m.dr2] if methods else ([f"DR2 ({cfg.enhancer.name})"] * bool(cfg.settings))
    if dr2_users and cfg.unet_weights != RANDOM:
        needs.append((cfg.unet_weights or DEFAULT_UNET_FILE, f"DR2's UNet for {', '.join(dr2_users)}"))
    networks: dict[str, list[str]] = {}
    for method in methods:
        if method.network is not None:
            networks.setdefault(method.network, []).append(method.name)
    if not methods and cfg.settings and cfg.enhancer.name != "none":
        networks[cfg.enhancer.name] = [f"DR2+{cfg.enhancer.name} (enhancer)"]
    for network, users in networks.items():
        weights = restorer_choice(cfg, network)["weights"] or RESTORERS[network].weights
        if weights is not None and weights != RANDOM:
            needs.append((weights, f"network {network} for {', '.join(users)}"))
    if not cfg.random_metric_networks:
        for key in cfg.metrics:
            info = metric_of(key)
            if info is None:
                continue
            files = [LPIPS_BACKBONES[cfg.lpips_net]] if info.name == "lpips" else list(info.weights)
            needs += [(file, f"metric {info.title}") for file in files]
    if "fid" in cfg.metrics:
        needs += [(s.fid_reference, f"FID statistics of set {s.name}") for s in cfg.sets if s.fid_reference]
    return needs
