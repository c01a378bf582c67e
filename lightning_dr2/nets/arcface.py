"""resnet_face18 (arcface-pytorch, use_se=False): the face-recognition network behind the identity metric.

VQFR, GFPGAN and the blind-face-restoration papers that DR2 compares with measure identity preservation
("Deg") with this network and its published weights `resnet18_110.pth`: grayscale 128x128 faces in
[-1, 1] -> 512-d embedding, then the angle between the embeddings of the restored and the ground-truth
face. The module names below reproduce the original ones exactly so that file loads strictly.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_dr2.nets.loading import load_into, read_state_dict

__all__ = ["IRBlock", "ResNetFace18", "arcface_preprocess", "load_arcface"]

INPUT_SIZE = 128
EMBEDDING_DIM = 512

# OpenCV's fixed-point BGR2GRAY for 8-bit images: weights 0.299/0.587/0.114 scaled by 2**14 and rounded.
_GRAY_SHIFT = 14
_GRAY_R, _GRAY_G, _GRAY_B = 4899, 9617, 1868


def _conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False)


class IRBlock(nn.Module):
    """The "improved residual" block of arcface-pytorch: BN first, one PReLU shared by both activations.

    The stride and the channel change happen in the second conv; the shortcut gets a 1x1 conv + BN when
    either changes.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__()
        self.bn0 = nn.BatchNorm2d(in_ch)
        self.conv1 = _conv3x3(in_ch, in_ch)
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.prelu = nn.PReLU()
        self.conv2 = _conv3x3(in_ch, out_ch, stride)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.downsample: nn.Sequential | None = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_ch),
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.prelu(self.bn1(self.conv1(self.bn0(x))))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.prelu(out + shortcut)


class ResNetFace18(nn.Module):
    """resnet_face18(use_se=False): (B, 1, 128, 128) grayscale in [-1, 1] -> (B, 512) embedding.

    Stem conv/BN/PReLU + 2x2 max-pool (128 -> 64), four stages of two IRBlocks (64, 128, 256, 512 channels;
    the last three halve the resolution, 64 -> 8), then BN, dropout, a linear layer on the flattened 8x8x512
    map and a BatchNorm1d. The 128x128 input size is fixed by that linear layer.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 64, kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.prelu = nn.PReLU()
        self.maxpool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.layer1 = self._stage(64, 64, stride=1)
        self.layer2 = self._stage(64, 128, stride=2)
        self.layer3 = self._stage(128, 256, stride=2)
        self.layer4 = self._stage(256, 512, stride=2)
        self.bn4 = nn.BatchNorm2d(512)
        self.dropout = nn.Dropout()
        self.fc5 = nn.Linear(512 * 8 * 8, EMBEDDING_DIM)
        self.bn5 = nn.BatchNorm1d(EMBEDDING_DIM)
        self._init_weights()

    @staticmethod
    def _stage(in_ch: int, out_ch: int, stride: int) -> nn.Sequential:
        return nn.Sequential(IRBlock(in_ch, out_ch, stride), IRBlock(out_ch, out_ch))

    def _init_weights(self) -> None:
        # The original's init (only matters for training from scratch; the metric loads weights).
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_normal_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1:] != (1, INPUT_SIZE, INPUT_SIZE):
            raise ValueError(
                f"ResNetFace18 expects (B, 1, {INPUT_SIZE}, {INPUT_SIZE}) grayscale faces in [-1, 1] "
                f"(see arcface_preprocess), got {tuple(x.shape)}"
            )
        x = self.maxpool(self.prelu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.dropout(self.bn4(x))
        return self.bn5(self.fc5(x.flatten(1)))


def load_arcface(path: str | Path) -> ResNetFace18:
    """ResNetFace18 with the weights in `path` (e.g. `resnet18_110.pth`, `module.` prefixes or not), frozen, eval.

    It is a measuring instrument: eval mode (BN running stats, no dropout) and no gradients.
    """
    model = ResNetFace18()
    load_into(model, read_state_dict(path), source=path)
    model.eval()
    model.requires_grad_(False)
    return model


def arcface_preprocess(images: Tensor, *, value_range: tuple[float, float]) -> Tensor:
    """RGB images (B, 3, H, W) in `value_range` -> (B, 1, 128, 128) network input, the VQFR protocol.

    The papers' scripts read 8-bit PNGs with OpenCV, convert to gray and resize with `cv2.resize`
    (INTER_LINEAR), then scale to [-1, 1]. We reproduce each step on tensors so the metric runs on the
    GPU inside training: clamp + round to uint8 levels, OpenCV's fixed-point BGR2GRAY (exact), bilinear
    resize with half-pixel centres and no antialiasing (cv2's INTER_LINEAR, within one gray level of its
    fixed-point arithmetic) rounded back to uint8 levels, then (x - 127.5) / 127.5.
    `value_range` is required, (-1, 1) or (0, 1) typically: guessing it would silently skew the metric.
    """
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"arcface_preprocess expects RGB images (B, 3, H, W), got {tuple(images.shape)}")
    low, high = (float(v) for v in value_range)
    if not high > low:
        raise ValueError(f"arcface_preprocess: value_range must be (low, high) with low < high, got {value_range}")
    x = images.detach().to(torch.float32)
    levels = ((x.clamp(low, high) - low) / (high - low) * 255.0).round().to(torch.int32)
    r, g, b = levels.unbind(dim=1)
    gray = (r * _GRAY_R + g * _GRAY_G + b * _GRAY_B + (1 << (_GRAY_SHIFT - 1))) >> _GRAY_SHIFT
    gray = gray.unsqueeze(1).to(torch.float32)
    if gray.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
        gray = F.interpolate(gray, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
        gray = gray.round().clamp(0, 255)
    return (gray - 127.5) / 127.5
