"""The two built-in CPU networks, pretrained on an offline source dataset: ``tiny`` and
``small`` (a small ResNet), both for 1-channel 28 px images."""

from __future__ import annotations

import torch
from torch import nn

from biotune_optuna.finetuning.inputs import GRAY_MEAN, GRAY_STD, InputSpec


def _conv_bn(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out),
                         nn.ReLU(inplace=True))


class TinyCNN(nn.Module):
    """About 6k parameters: three conv stages and a linear head, for fast tests."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.stem = nn.Sequential(_conv_bn(in_channels, 8, 2))
        self.stage1 = _conv_bn(8, 16, 2)
        self.stage2 = _conv_bn(16, 32, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage2(self.stage1(self.stem(x)))
        return self.head(torch.flatten(self.pool(x), 1))

    def biotune_blocks(self) -> list[tuple[str, list[str]]]:
        return [(n, [n]) for n in ("stem", "stage1", "stage2", "head")]


class BasicBlock(nn.Module):
    """ResNet's basic residual block with a projection shortcut when the shape changes."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = _conv_bn(c_in, c_out, stride)
        self.conv2 = nn.Sequential(nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False),
                                   nn.BatchNorm2d(c_out))
        self.shortcut = nn.Identity() if stride == 1 and c_in == c_out else nn.Sequential(
            nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv2(self.conv1(x)) + self.shortcut(x))


class SmallResNet(nn.Module):
    """About 0.3M parameters, ResNet-style, downsampling at every stage (fast on a CPU)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.stem = _conv_bn(in_channels, 16, 2)
        self.stage1 = BasicBlock(16, 32, 2)
        self.stage2 = BasicBlock(32, 64, 2)
        self.stage3 = BasicBlock(64, 128, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage3(self.stage2(self.stage1(self.stem(x))))
        return self.head(torch.flatten(self.pool(x), 1))

    def biotune_blocks(self) -> list[tuple[str, list[str]]]:
        return [(n, [n]) for n in ("stem", "stage1", "stage2", "stage3", "head")]


BUILTIN_CLASSES = {"tiny": TinyCNN, "small": SmallResNet}
BUILTIN_INPUT = InputSpec(1, 28, GRAY_MEAN, GRAY_STD)
