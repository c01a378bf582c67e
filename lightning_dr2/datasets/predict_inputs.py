"""What the predict jobs read: input faces made square and resized to the UNet size, with their names and
per-image seeds (restore), or the work items of a DR2 cache (each with its own seed and (N, tau, omega)).
Undecodable files become {"bad": ...} items, counted and listed by the job instead of stopping it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from lightning_dr2.diffusion.noise import image_seed
from lightning_dr2.image_io import BadImageError, fit_square, image_to_tensor, read_image, resize

WorkItems = dict[str, tuple[str, dict[str, Any]]]  # output name -> (input file, settings of this output alone)


class RestoreInputs(Dataset):
    """Input faces made square (`input_policy`) and resized to the UNet size, with name, seed and how they
    were reshaped; undecodable files become {"bad": ...}."""

    def __init__(self, root: Path, rels: list[str], image_size: int, seed: int, policy: str) -> None:
        self.root, self.rels, self.image_size, self.seed, self.policy = root, rels, image_size, seed, policy

    def __len__(self) -> int:
        return len(self.rels)

    def __getitem__(self, index: int) -> dict[str, Any]:
        rel = self.rels[index]
        item = self.load(rel)
        return item if "bad" in item else {**item, "name": rel, "seed": image_seed(self.seed, rel)}

    def load(self, rel: str) -> dict[str, Any]:
        """{"lq", "shape"} of the input file `rel`, or {"bad", "reason"} when it cannot be decoded."""
        try:
            arr = read_image(self.root / rel)
        except BadImageError as err:
            return {"bad": rel, "reason": err.reason}
        h, w = arr.shape[:2]
        square = fit_square(image_to_tensor(arr), self.policy)
        lq = resize(square[None], self.image_size).clamp(-1, 1)[0]
        shape = {"input_size": [h, w], "reshaped": self.policy if h != w else "none"}
        return {"lq": lq, "shape": shape}


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    good = [it for it in items if "lq" in it]
    return {
        "lq": torch.stack([it["lq"] for it in good]) if good else torch.empty(0),
        "name": [it["name"] for it in good],
        "seed": [it["seed"] for it in good],
        "shape": [it["shape"] for it in good],
        "setting": [it.get("setting") for it in good],  # per-item (N, tau, omega) of a DR2 cache; None in restore
        "bad": [(it["bad"], it["reason"]) for it in items if "bad" in it],
    }


class CacheInputs(RestoreInputs):
    """Work items of the cache: the face of `source` with the item's own seed and (N, tau, omega)."""

    def __init__(self, root: Path, names: list[str], work: WorkItems, image_size: int, policy: str) -> None:
        super().__init__(root, names, image_size, 0, policy)
        self.work = work

    def __getitem__(self, index: int) -> dict[str, Any]:
        name = self.rels[index]
        source, own = self.work[name]
        item = self.load(source)
        if "bad" in item:
            return {"bad": name, "reason": item["reason"]}
        return {**item, "name": name, "seed": own["seed"], "setting": (own["N"], own["tau"], own["omega"])}
