"""Small networks for quick experiments on tiny inputs such as 8x8 digits.

``mlp`` and ``lenet5`` train in seconds on a CPU, which makes them the models
of choice for smoke tests and for checking a pruning schedule end to end before
spending GPU time on the larger ones.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

from silo_core.models.registry import check_image_size

__all__ = ["MLP", "LeNet5"]

MLP_HIDDEN = (256, 128)
LENET5_MIN_IMAGE_SIZE = 4


class MLP(nn.Module):
    """Fully connected net: flatten -> 256 -> 128 -> classes, ReLU between.

    Two hidden layers give enough weights for magnitude pruning to have
    something to remove (about 50k for 64 inputs and 10 classes) while still
    fitting 8x8 digits in a few epochs.
    """

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        widths = (in_features, *MLP_HIDDEN)
        layers: list[nn.Module] = [nn.Flatten()]
        for width_in, width_out in itertools.pairwise(widths):
            layers += [nn.Linear(width_in, width_out), nn.ReLU(inplace=True)]
        layers.append(nn.Linear(widths[-1], num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.net(x)
        return logits


class LeNet5(nn.Module):
    """LeNet-5 layout (conv 6, pool, conv 16, pool, fc 120, fc 84, fc classes).

    Both 5x5 convolutions use padding 2 ("same" size) so the net accepts any
    image of at least 4x4, including 8x8 digits, instead of only the 32x32 of
    the original; the flattened size after the second pool is therefore
    ``16 * (image_size // 4) ** 2``. ReLU and max pooling replace the original
    tanh and trainable subsampling, as is usual today.
    """

    def __init__(self, in_channels: int, num_classes: int, image_size: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        side = (image_size // 2) // 2
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * side * side, 120),
            nn.ReLU(inplace=True),
            nn.Linear(120, 84),
            nn.ReLU(inplace=True),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.classifier(self.features(x))
        return logits


def build_mlp(*, in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    """Builder of :class:`MLP`; any input size works."""
    return MLP(in_channels * image_size * image_size, num_classes)


def build_lenet5(*, in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    """Builder of :class:`LeNet5`; two 2x2 pools need at least 4x4 input."""
    check_image_size("lenet5", image_size, minimum=LENET5_MIN_IMAGE_SIZE)
    return LeNet5(in_channels, num_classes, image_size)
