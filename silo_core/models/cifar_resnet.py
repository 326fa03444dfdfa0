"""CIFAR ResNets (ResNet-20/32/56) of He et al., 2016, with option A shortcuts.

These are the 6n+2-layer networks of section 4.2 of "Deep Residual Learning for
Image Recognition": a 3x3 stem with 16 channels, three stages of n basic blocks
with 16, 32 and 64 channels (the second and third start with stride 2), global
average pooling and one linear layer.

Shortcuts follow option A of the paper: where a block halves the resolution and
doubles the width, the shortcut is the identity subsampled with stride 2 and
zero-padded with the missing channels. It has no parameters, which matters for
pruning: every prunable weight lives in a convolution or the final linear layer,
and ResNet-20 keeps its published size of about 0.27M parameters.

Convolutions use Kaiming (He) normal initialisation; BatchNorm starts at scale 1
and shift 0. Every feature map stays at least 1x1 for any input size, so these
models accept any ``image_size >= 1``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from silo_core.models.registry import ModelBuilder

__all__ = ["BasicBlock", "CifarResNet", "OptionAShortcut"]

STAGE_WIDTHS = (16, 32, 64)


class OptionAShortcut(nn.Module):
    """Parameter-free shortcut: stride-2 subsampling plus zero channels.

    The new channels are appended after the existing ones; which side receives
    the zeros does not change what the network can represent.
    """

    def __init__(self, extra_channels: int, stride: int) -> None:
        super().__init__()
        self.extra_channels = extra_channels
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        # F.pad lists (last dim left, right, next-to-last left, right, ...).
        return F.pad(x, (0, 0, 0, 0, 0, self.extra_channels))


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with a residual connection, ReLU after the sum."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(
            in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False
        )
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module
        if stride != 1 or in_channels != out_channels:
            self.shortcut = OptionAShortcut(out_channels - in_channels, stride)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet with ``6 * blocks_per_stage + 2`` weighted layers for small images."""

    def __init__(self, blocks_per_stage: int, in_channels: int, num_classes: int) -> None:
        super().__init__()
        first = STAGE_WIDTHS[0]
        self.conv1 = nn.Conv2d(in_channels, first, kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(first)
        stages: list[nn.Module] = []
        width_in = first
        for index, width in enumerate(STAGE_WIDTHS):
            blocks: list[nn.Module] = []
            for block_index in range(blocks_per_stage):
                stride = 2 if index > 0 and block_index == 0 else 1
                blocks.append(BasicBlock(width_in, width, stride))
                width_in = width
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(STAGE_WIDTHS[-1], num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        logits: torch.Tensor = self.fc(torch.flatten(self.pool(x), 1))
        return logits


def _builder(depth: int) -> ModelBuilder:
    blocks_per_stage = (depth - 2) // 6

    def build(*, in_channels: int, num_classes: int, image_size: int) -> nn.Module:
        del image_size  # global pooling makes the network size-agnostic
        return CifarResNet(blocks_per_stage, in_channels, num_classes)

    build.__name__ = build.__qualname__ = f"build_resnet{depth}"
    build.__doc__ = f"Builder of the {depth}-layer CIFAR ResNet (option A)."
    return build


build_resnet20 = _builder(20)
build_resnet32 = _builder(32)
build_resnet56 = _builder(56)
