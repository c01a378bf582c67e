"""The one scoring path: restored images against their ground truth with the metric suite, by the papers' protocol.

The training-time evaluator (`callbacks.evaluator`, outputs in memory) and `eval` (`modules.scorer.ScoreModule`,
saved files) both score through `Scorer`, so each rule of the protocol lives here once:

* images are scored in same-size groups (`group_by_size`), each at its own size;
* an output is scored as its saved PNG holds it: uint8 levels (`to_uint8`, then back to [-1, 1] as files are
  read). Bit for bit a no-op on files, and the metrics quantise their inputs anyway; it matters before a resize;
* the protocol's one resize: a paired output of another size is brought (bicubic) to its ground truth's size,
  then clamped to [-1, 1]; an output without ground truth is scored at its own size;
* a JPEG file's gray (`pred_gray` / `target_gray`, for the identity metric) belongs to the image it was decoded
  from: a resized output goes through the RGB path instead;
* per-image rows are {"name", <metric>: float}; `compute` syncs the float64 sums across ranks (every rank calls it).

How images are sharded over ranks and where the rows go (files under `ddp_spawn`, W&B tables) is the callers'.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from lightning_dr2.image_io import resize, to_uint8
from lightning_dr2.metrics.suite import MetricSuite

log = logging.getLogger(__name__)


class Scorer:
    """Feeds same-size groups of (output, ground truth) to a `MetricSuite` by the protocol above.

    `warn_on_resize`: log once when outputs are resized to their ground truth (unexpected for `eval`'s saved
    outputs; routine for the evaluator, whose network may work at another size than the set's).
    """

    def __init__(self, suite: MetricSuite, warn_on_resize: bool = True) -> None:
        self.suite = suite
        self.warn_on_resize = warn_on_resize
        self._resize_logged = False

    def reset(self) -> None:
        self.suite.reset()

    def score(
        self,
        names: Sequence[str],
        pred: Tensor,
        target: Tensor | None = None,
        pred_gray: Tensor | None = None,
        target_gray: Tensor | None = None,
    ) -> tuple[Tensor, list[dict[str, Any]]]:
        """Score one same-size group; returns the output as scored (at its ground truth's size) and a row per image."""
        pred = as_saved(pred)
        if target is not None and pred.shape[-2:] != target.shape[-2:]:
            if self.warn_on_resize and not self._resize_logged:
                log.warning(
                    "outputs are %s, ground truth %s: outputs resized (bicubic) to score them",
                    tuple(pred.shape[-2:]),
                    tuple(target.shape[-2:]),
                )
                self._resize_logged = True
            pred = resize(pred, target.shape[-1]).clamp(-1, 1)
            pred_gray = None  # the file's gray is not the resized output's: identity uses its RGB
        values = self.suite.update(pred, target, pred_gray=pred_gray, target_gray=target_gray)
        rows = [{"name": name, **{k: float(v[i]) for k, v in values.items()}} for i, name in enumerate(names)]
        return pred, rows

    def compute(self) -> dict[str, float]:
        """Every metric over all ranks (each rank must call it: the sums are synced)."""
        return self.suite.compute()


def as_saved(images: Tensor) -> Tensor:
    """[-1, 1] images as a PNG of them reads back: uint8 levels, mapped with `image_io.image_to_tensor`'s
    arithmetic (so a tensor read from a file comes back bit for bit)."""
    return to_uint8(images).float().div(127.5).sub(1.0)


def group_by_size(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Collate dataset items into same-size sub-batches (tensors stacked, other values listed).

    Real sets mix image sizes; FID's Inception and Deg's 128 px ArcFace input resize each image from its own
    size, so an image must never be brought to a neighbour's size before scoring (a 256 px face upscaled to
    512 moves its Inception features by about a third). Only the protocol's own resizes remain (the output to
    its ground truth's size for paired metrics). Groups keep the items' first-seen order.
    """
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for item in items:
        key = tuple((k, tuple(v.shape)) for k, v in item.items() if isinstance(v, Tensor))  # same keys, same sizes
        groups.setdefault(key, []).append(item)
    return [
        {
            k: torch.stack([m[k] for m in members]) if isinstance(v, Tensor) else [m[k] for m in members]
            for k, v in members[0].items()
        }
        for members in groups.values()
    ]
