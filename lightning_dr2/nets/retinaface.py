"""RetinaFace (Deng et al., CVPR 2020) as a plain nn.Module; priors, decoding and NMS are `faces.retinaface`.

Written from the architecture of biubug6/Pytorch_Retinaface (the weights facexlib, GFPGAN and CodeFormer
use): a ResNet-50 or MobileNet-0.25 backbone, a 3-level FPN (strides 8, 16, 32), an SSH context module per
level and 1x1 heads with 2 anchors per cell for face/background, box offsets and 5 landmarks. Module names
follow that release so `detection_Resnet50_Final.pth` and `detection_mobilenet0.25_Final.pth` (facexlib's
release files, registered in `lightning_dr2.weights`) load with strict=True.

Conventions of those weights, kept here: BGR input minus the mean (104, 117, 123), no scaling; priors
(cx, cy, w, h) normalised by the image size; offsets decoded with variances (0.1, 0.2).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torchvision
from torch import nn


@dataclass(frozen=True)
class RetinaFaceArch:
    """One released RetinaFace variant: its backbone, widths and weight file."""

    backbone: str
    in_channels: tuple[int, int, int]  # backbone outputs at strides 8, 16, 32
    out_channels: int
    weights: str


ARCHS = {
    "resnet50": RetinaFaceArch("resnet50", (512, 1024, 2048), 256, "detection_Resnet50_Final.pth"),
    "mobilenet0.25": RetinaFaceArch("mobilenet0.25", (64, 128, 256), 64, "detection_mobilenet0.25_Final.pth"),
}


# --- building blocks (Conv-BN[-LeakyReLU] in nn.Sequential: indices 0, 1 are the released key names) -------

STEPS = (8, 16, 32)  # strides of the three detection levels


def _conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, slope: float | None = 0.0) -> nn.Sequential:
    """Conv (no bias) + BatchNorm, then LeakyReLU(slope) unless slope is None."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout)]
    if slope is not None:
        layers.append(nn.LeakyReLU(slope, inplace=True))
    return nn.Sequential(*layers)


def _depthwise_separable(cin: int, cout: int, stride: int) -> nn.Sequential:
    """MobileNetV1 block: 3x3 depthwise + BN + LeakyReLU(0.1), 1x1 pointwise + BN + LeakyReLU(0.1)."""
    return nn.Sequential(
        nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False),
        nn.BatchNorm2d(cin),
        nn.LeakyReLU(0.1, inplace=True),
        nn.Conv2d(cin, cout, 1, 1, 0, bias=False),
        nn.BatchNorm2d(cout),
        nn.LeakyReLU(0.1, inplace=True),
    )


class MobileNetV1Body(nn.Module):
    """MobileNetV1 at width 0.25 (8..256 channels), returning stages 1-3 (strides 8, 16, 32)."""

    def __init__(self) -> None:
        super().__init__()
        dw = _depthwise_separable
        self.stage1 = nn.Sequential(
            _conv_bn(3, 8, stride=2, slope=0.1),
            dw(8, 16, 1),
            dw(16, 32, 2),
            dw(32, 32, 1),
            dw(32, 64, 2),
            dw(64, 64, 1),
        )
        self.stage2 = nn.Sequential(dw(64, 128, 2), *(dw(128, 128, 1) for _ in range(5)))
        self.stage3 = nn.Sequential(dw(128, 256, 2), dw(256, 256, 1))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        c3 = self.stage1(x)
        c4 = self.stage2(c3)
        return [c3, c4, self.stage3(c4)]


class ResNet50Body(nn.Module):
    """torchvision's ResNet-50 up to layer4 (no pooling/classifier), returning layers 2-4."""

    def __init__(self) -> None:
        super().__init__()
        resnet = torchvision.models.resnet50(weights=None)
        self.conv1, self.bn1, self.relu, self.maxpool = resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.layer1(self.maxpool(self.relu(self.bn1(self.conv1(x)))))
        c3 = self.layer2(x)
        c4 = self.layer3(c3)
        return [c3, c4, self.layer4(c4)]


class FPN(nn.Module):
    """Top-down feature pyramid: 1x1 lateral convs, nearest upsampling, 3x3 merge convs."""

    def __init__(self, in_channels: tuple[int, int, int], out: int) -> None:
        super().__init__()
        slope = 0.1 if out <= 64 else 0.0
        self.output1 = _conv_bn(in_channels[0], out, k=1, slope=slope)
        self.output2 = _conv_bn(in_channels[1], out, k=1, slope=slope)
        self.output3 = _conv_bn(in_channels[2], out, k=1, slope=slope)
        self.merge1 = _conv_bn(out, out, slope=slope)
        self.merge2 = _conv_bn(out, out, slope=slope)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        p3, p4, p5 = self.output1(feats[0]), self.output2(feats[1]), self.output3(feats[2])
        p4 = self.merge2(p4 + F.interpolate(p5, size=p4.shape[-2:], mode="nearest"))
        p3 = self.merge1(p3 + F.interpolate(p4, size=p3.shape[-2:], mode="nearest"))
        return [p3, p4, p5]


class SSH(nn.Module):
    """Single-stage headless context module: 3x3, 5x5 (two 3x3) and 7x7 (three 3x3) branches, concatenated."""

    def __init__(self, cin: int, out: int) -> None:
        super().__init__()
        slope = 0.1 if out <= 64 else 0.0
        self.conv3X3 = _conv_bn(cin, out // 2, slope=None)
        self.conv5X5_1 = _conv_bn(cin, out // 4, slope=slope)
        self.conv5X5_2 = _conv_bn(out // 4, out // 4, slope=None)
        self.conv7X7_2 = _conv_bn(out // 4, out // 4, slope=slope)
        self.conv7x7_3 = _conv_bn(out // 4, out // 4, slope=None)  # lower-case x: the released key name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch5_in = self.conv5X5_1(x)
        out = torch.cat(
            [self.conv3X3(x), self.conv5X5_2(branch5_in), self.conv7x7_3(self.conv7X7_2(branch5_in))], dim=1
        )
        return F.relu(out)


class _Head(nn.Module):
    """1x1 conv predicting `per_anchor` values for each of 2 anchors, flattened to (B, H*W*2, per_anchor)."""

    def __init__(self, cin: int, per_anchor: int, anchors: int = 2) -> None:
        super().__init__()
        self.per_anchor = per_anchor
        self.conv1x1 = nn.Conv2d(cin, anchors * per_anchor, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1x1(x).permute(0, 2, 3, 1)
        return out.reshape(out.shape[0], -1, self.per_anchor)


class RetinaFace(nn.Module):
    """The network: (B, 3, H, W) mean-subtracted BGR -> (box offsets (B, P, 4), face probability (B, P),
    landmark offsets (B, P, 10)), P = number of priors (`prior_boxes`)."""

    def __init__(self, arch: str = "resnet50") -> None:
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"unknown RetinaFace backbone {arch!r}; known: {', '.join(ARCHS)}")
        spec = ARCHS[arch]
        self.arch = arch
        self.body = ResNet50Body() if spec.backbone == "resnet50" else MobileNetV1Body()
        out = spec.out_channels
        self.fpn = FPN(spec.in_channels, out)
        self.ssh1, self.ssh2, self.ssh3 = SSH(out, out), SSH(out, out), SSH(out, out)
        self.ClassHead = nn.ModuleList(_Head(out, 2) for _ in STEPS)
        self.BboxHead = nn.ModuleList(_Head(out, 4) for _ in STEPS)
        self.LandmarkHead = nn.ModuleList(_Head(out, 10) for _ in STEPS)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        p3, p4, p5 = self.fpn(self.body(x))
        feats = [self.ssh1(p3), self.ssh2(p4), self.ssh3(p5)]
        boxes = torch.cat([head(f) for head, f in zip(self.BboxHead, feats, strict=False)], dim=1)
        logits = torch.cat([head(f) for head, f in zip(self.ClassHead, feats, strict=False)], dim=1)
        landmarks = torch.cat([head(f) for head, f in zip(self.LandmarkHead, feats, strict=False)], dim=1)
        return boxes, logits.softmax(-1)[..., 1], landmarks


# --- priors, decoding --------------------------------------------------------------------------------------
