"""`make quickstart`: the framework end to end on generated faces, on a laptop CPU, in minutes."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from lightning_dr2.config import load_config
from lightning_dr2.train import train_ddpm

log = logging.getLogger(__name__)


def run_quickstart(overrides: Sequence[str] = ()) -> dict[str, str]:
    """Synthetic faces -> tiny DDPM (EMA) -> sample grid + loss curve. Returns the produced paths."""
    start = time.perf_counter()
    cfg = load_config("quickstart", list(overrides))
    print(
        f"[quickstart] 1/1 training a tiny DDPM on synthetic {cfg.data.image_size}px faces in {cfg.data.root} "
        f"for {cfg.trainer.max_steps} steps (CPU)"
    )
    result = train_ddpm(cfg)
    outputs = {
        "run directory": str(result.run_dir),
        "sample grid (EMA, DDIM)": str(result.sample_grid),
        "loss curve": str(result.loss_curve),
        "exported UNet": str(result.export_path),
    }
    print(f"\n[quickstart] done in {time.perf_counter() - start:.0f} s")
    for name, path in outputs.items():
        print(f"  {name:26s} {path}")
    return outputs
