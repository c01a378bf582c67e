"""What eval scores: (prediction, ground truth) files read as [-1, 1] tensors, plus the uint8 gray of JPEG files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from lightning_dr2.image_io import read_image_tensor, read_jpeg_gray


class ScoredImages(Dataset):
    """(prediction, ground truth or None) files by relative name, read as [-1, 1] tensors (rows also carry the
    LQ file, used by the report grids only). JPEG files also give `pred_gray` / `target_gray`: their uint8
    gray as `cv2.imread(path, 0)` decodes it, which the identity metric's reference script reads."""

    def __init__(self, rows: list[tuple[str, Path, Path | None, Path]]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        name, pred, target, _ = self.rows[index]
        item = {"name": name}
        for key, path in (("pred", pred), ("target", target)):
            if path is not None:
                item[key] = read_image_tensor(path)
                gray = read_jpeg_gray(path)
                if gray is not None:
                    item[f"{key}_gray"] = torch.from_numpy(gray)
        return item
