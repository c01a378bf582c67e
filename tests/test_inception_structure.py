"""The FID Inception is pytorch-fid's, block by block: types, order, and the FID-specific pool branches.

Shapes alone would not catch torchvision's stock blocks (their average pools count padded zeros, and
Mixed_7c averages where the TF graph behind FID max-pools): every FID number would move silently.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torchvision.models.inception import InceptionB, InceptionD

from lightning_dr2.nets.inception import (
    FIDInceptionA,
    FIDInceptionC,
    FIDInceptionE1,
    FIDInceptionE2,
    FIDInceptionV3,
)

AVG_NO_PAD = ("avg", 3, 1, 1, False)  # 3x3, stride 1, padding 1, padded zeros not counted (TF)
MAX_STRIDE2 = ("max", 3, 2, 0, None)
MAX_SAME = ("max", 3, 1, 1, None)

# name -> (exact block class, pool calls made by the block) as pytorch-fid's FIDInceptionV3 defines them
BLOCKS = {
    "Mixed_5b": (FIDInceptionA, [AVG_NO_PAD]),
    "Mixed_5c": (FIDInceptionA, [AVG_NO_PAD]),
    "Mixed_5d": (FIDInceptionA, [AVG_NO_PAD]),
    "Mixed_6a": (InceptionB, [MAX_STRIDE2]),
    "Mixed_6b": (FIDInceptionC, [AVG_NO_PAD]),
    "Mixed_6c": (FIDInceptionC, [AVG_NO_PAD]),
    "Mixed_6d": (FIDInceptionC, [AVG_NO_PAD]),
    "Mixed_6e": (FIDInceptionC, [AVG_NO_PAD]),
    "Mixed_7a": (InceptionD, [MAX_STRIDE2]),
    "Mixed_7b": (FIDInceptionE1, [AVG_NO_PAD]),
    "Mixed_7c": (FIDInceptionE2, [MAX_SAME]),
}
STEM = ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1", "Conv2d_4a_3x3", "maxpool2"]


@pytest.fixture(scope="module")
def model() -> FIDInceptionV3:
    torch.manual_seed(0)
    return FIDInceptionV3().eval()


def test_block_types(model: FIDInceptionV3) -> None:
    for name, (cls, _) in BLOCKS.items():
        assert type(getattr(model, name)) is cls, f"{name} is {type(getattr(model, name)).__name__}, not {cls.__name__}"


def test_blocks_run_in_order_with_the_fid_pool_branches(model: FIDInceptionV3, monkeypatch) -> None:
    """Forward a batch and record which top-level block runs, and every pooling call made inside it."""
    order: list[str] = []
    pools: dict[str, list[tuple]] = {}
    avg_pool2d, max_pool2d = F.avg_pool2d, F.max_pool2d

    def avg(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True, divisor_override=None):
        pools.setdefault(order[-1], []).append(("avg", kernel_size, stride or kernel_size, padding, count_include_pad))
        return avg_pool2d(x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)

    def mx(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
        pools.setdefault(order[-1], []).append(("max", kernel_size, stride or kernel_size, padding, None))
        return max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode, return_indices)

    monkeypatch.setattr(F, "avg_pool2d", avg)
    monkeypatch.setattr(F, "max_pool2d", mx)
    hooks = [
        module.register_forward_pre_hook(lambda m, args, name=name: order.append(name))
        for name, module in model.named_children()
    ]
    try:
        with torch.no_grad():
            features = model(torch.zeros(1, 3, 32, 32))
    finally:
        for hook in hooks:
            hook.remove()
    assert features.shape == (1, 2048)
    assert order == [*STEM, *BLOCKS, "avgpool"]  # the classifier `fc` is in the file but never used
    for name, (_, expected) in BLOCKS.items():
        assert pools.get(name) == expected, f"{name}: pool calls {pools.get(name)}, expected {expected}"
