"""The InceptionV3 of FID (pytorch-fid's `FIDInceptionA/C/E_1/E_2`, also in BasicSR and VQFR).

FID numbers are only comparable when they come from this exact network: the TF "2015-12-05" Inception graph
ported to PyTorch (`pt_inception-2015-12-05-6726825d.pth`; 1008 classes), which differs from torchvision's
ImageNet InceptionV3 in its blocks:

* `FIDInceptionA`, `FIDInceptionC`, `FIDInceptionE1`: the pool branch averages without counting the padding
  (`count_include_pad=False`), as TF does;
* `FIDInceptionE2` (the last block, Mixed_7c): the pool branch max-pools instead of averaging.

We build it from torchvision's inception building blocks with the module names of torchvision's
`Inception3`, so the state dict has the file's key names (`Conv2d_1a_3x3.conv.weight`, `Mixed_5b...`,
`fc.weight` 1008x2048) and loads strictly.

Input convention: images in [-1, 1], any size; they are resized to 299x299 bilinearly (align_corners=False,
no antialiasing) inside the network. That is BasicSR's `load_patched_inception_v3` (resize_input=True,
normalize_input=False, fed with (x/255 - 0.5)/0.5) and pytorch-fid's default (fed [0, 1], 2x - 1 after the
resize; bilinear resizing is linear, so the two agree up to float rounding).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.inception import BasicConv2d, InceptionA, InceptionB, InceptionC, InceptionD, InceptionE

from lightning_dr2.nets.loading import load_into, read_state_dict

__all__ = [
    "FEATURE_DIM",
    "FID_WEIGHTS_NAME",
    "FIDInceptionA",
    "FIDInceptionC",
    "FIDInceptionE1",
    "FIDInceptionE2",
    "FIDInceptionV3",
    "load_fid_inception",
]

FID_WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"
FEATURE_DIM = 2048  # pool3
NUM_CLASSES = 1008  # the original TF graph's classifier; unused for FID, kept so the file loads strictly
INPUT_SIZE = 299


class FIDInceptionA(InceptionA):
    """InceptionA whose pool branch ignores padded zeros in the average (TF semantics)."""

    def _forward(self, x: Tensor) -> list[Tensor]:
        branch1x1 = self.branch1x1(x)
        branch5x5 = self.branch5x5_2(self.branch5x5_1(x))
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        pool = F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)
        return [branch1x1, branch5x5, branch3x3dbl, self.branch_pool(pool)]


class FIDInceptionC(InceptionC):
    """InceptionC whose pool branch ignores padded zeros in the average (TF semantics)."""

    def _forward(self, x: Tensor) -> list[Tensor]:
        branch1x1 = self.branch1x1(x)
        branch7x7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        branch7x7dbl = self.branch7x7dbl_1(x)
        for conv in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            branch7x7dbl = conv(branch7x7dbl)
        pool = F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)
        return [branch1x1, branch7x7, branch7x7dbl, self.branch_pool(pool)]


class _FIDInceptionE(InceptionE):
    """InceptionE with the pool of its pool branch left to subclasses."""

    def _pool(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def _forward(self, x: Tensor) -> list[Tensor]:
        branch1x1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        branch3x3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        b3dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        branch3x3dbl = torch.cat([self.branch3x3dbl_3a(b3dbl), self.branch3x3dbl_3b(b3dbl)], 1)
        return [branch1x1, branch3x3, branch3x3dbl, self.branch_pool(self._pool(x))]


class FIDInceptionE1(_FIDInceptionE):
    """First InceptionE block (Mixed_7b): average pool without counting padded zeros."""

    def _pool(self, x: Tensor) -> Tensor:
        return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class FIDInceptionE2(_FIDInceptionE):
    """Second InceptionE block (Mixed_7c): max pool in the pool branch (a quirk of the TF graph FID uses)."""

    def _pool(self, x: Tensor) -> Tensor:
        return F.max_pool2d(x, kernel_size=3, stride=1, padding=1)


class FIDInceptionV3(nn.Module):
    """(B, 3, H, W) images in [-1, 1] -> (B, 2048) pool3 features, the FID InceptionV3.

    Always runs in float32 with autocast disabled, so mixed-precision training does not change the features
    (and the FID) it reports. Random init here (Kaiming-normal convs, which keeps activations O(1) through
    the depth) only serves tests; for FID, load the weights with `load_fid_inception`.
    """

    feature_dim = FEATURE_DIM

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.maxpool1 = nn.MaxPool2d(kernel_size=3, stride=2)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.maxpool2 = nn.MaxPool2d(kernel_size=3, stride=2)
        self.Mixed_5b = FIDInceptionA(192, pool_features=32)
        self.Mixed_5c = FIDInceptionA(256, pool_features=64)
        self.Mixed_5d = FIDInceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
        self.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = FIDInceptionE1(1280)
        self.Mixed_7c = FIDInceptionE2(2048)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(FEATURE_DIM, NUM_CLASSES)  # in the weight file; not used for features
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")

    def forward(self, images: Tensor) -> Tensor:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"FIDInceptionV3 expects RGB images (B, 3, H, W) in [-1, 1], got {tuple(images.shape)}")
        with torch.autocast(device_type=images.device.type, enabled=False):
            x = images.float()
            x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
            x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
            x = self.maxpool1(x)
            x = self.maxpool2(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)))
            for block in (
                self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c,
                self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c,
            ):  # fmt: skip
                x = block(x)
            return torch.flatten(self.avgpool(x), 1)


def load_fid_inception(
    path: str | os.PathLike | None = None, weights_dir: str | os.PathLike | None = None
) -> FIDInceptionV3:
    """FIDInceptionV3 with the pytorch-fid weights, frozen and in eval mode.

    `path` None: the file `pt_inception-2015-12-05-6726825d.pth` is located with `find_weight` (a
    FileNotFoundError naming it, the folders searched and where to get it, if absent; nothing is downloaded).
    """
    if path is None:
        from lightning_dr2.weights import find_weight  # here: the weights registry is only needed for lookups

        path = find_weight(FID_WEIGHTS_NAME, weights_dir=weights_dir)
    path = Path(path)
    model = FIDInceptionV3()
    state = read_state_dict(path)
    # BatchNorm's num_batches_tracked counters are bookkeeping, not weights; files converted before they
    # existed lack them. Fill them from the model so such a file still loads strictly.
    for key, value in model.state_dict().items():
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = value
    load_into(model, state, source=path)
    model.eval()
    model.requires_grad_(False)
    return model
