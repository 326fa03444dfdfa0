"""CIFAR-sized VGG-11/16/19 with BatchNorm and a single linear classifier.

This is the variant used throughout the pruning literature for CIFAR-10
(about 20M parameters for VGG-19), not the 139M-parameter ImageNet network: the
convolution stacks follow the standard configurations A, D and E (3x3
convolutions, each followed by BatchNorm and ReLU, with five 2x2 max pools), and
the three large fully connected layers are replaced by global average pooling
and one ``Linear(512, num_classes)``. There is no dropout, so a seeded run is
deterministic.

Small inputs: the max pools use ``ceil_mode=True``. On even sizes this is the
ordinary 2x2 pool, so 32x32 CIFAR images see exactly the standard network; on
odd sizes the last row/column is pooled on its own instead of being dropped,
and a 1x1 map stays 1x1 instead of vanishing. The layers and parameters are the
same for every image size, and any ``image_size >= 1`` works (8x8 digits and
28x28 images included, which plain floor pooling would reduce to nothing).
Adaptive average pooling then turns whatever map is left into one 512-vector.
"""

from __future__ import annotations

import torch
from torch import nn

from silo_core.models.registry import ModelBuilder

__all__ = ["VGG_STAGES", "CifarVGG"]

# Conv widths of the five stages of each configuration; a max pool ends each stage.
VGG_STAGES: dict[str, tuple[tuple[int, ...], ...]] = {
    "vgg11": ((64,), (128,), (256,) * 2, (512,) * 2, (512,) * 2),
    "vgg16": ((64,) * 2, (128,) * 2, (256,) * 3, (512,) * 3, (512,) * 3),
    "vgg19": ((64,) * 2, (128,) * 2, (256,) * 4, (512,) * 4, (512,) * 4),
}


class CifarVGG(nn.Module):
    """VGG feature stack + global average pool + one linear layer."""

    def __init__(
        self, stages: tuple[tuple[int, ...], ...], in_channels: int, num_classes: int
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width_in = in_channels
        for stage in stages:
            for width in stage:
                layers += [
                    nn.Conv2d(width_in, width, kernel_size=3, padding=1),
                    nn.BatchNorm2d(width),
                    nn.ReLU(inplace=True),
                ]
                width_in = width
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(width_in, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, 0.01)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.classifier(torch.flatten(self.pool(self.features(x)), 1))
        return logits


def _builder(name: str) -> ModelBuilder:
    stages = VGG_STAGES[name]

    def build(*, in_channels: int, num_classes: int, image_size: int) -> nn.Module:
        del image_size  # ceil-mode pools and global pooling accept any size
        return CifarVGG(stages, in_channels, num_classes)

    build.__name__ = build.__qualname__ = f"build_{name}"
    build.__doc__ = f"Builder of CIFAR-sized {name} with BatchNorm."
    return build


build_vgg11 = _builder("vgg11")
build_vgg16 = _builder("vgg16")
build_vgg19 = _builder("vgg19")
