"""ImageNet-style networks taken from ``torchvision.models``.

They are built through torchvision's own builders, always with
``weights=None``: the service trains from scratch (pruning experiments need a
known initialisation) and worker machines must never reach the network.

Input adaptation:

* ``in_channels`` other than 3: the first convolution is replaced by one with
  the same settings (width, kernel, stride, padding, bias) and the requested
  input channels, initialised the way torchvision initialises that layer.
* ``image_size``: the ResNets end in adaptive average pooling, and every
  stride-2 stage maps a 1x1 map to 1x1, so they run on any size; tried down to
  1x1, in training and evaluation mode with batches of two. Very small inputs
  reach the classifier as a single pixel, which is allowed but rarely useful;
  32 and above is where they are normally used. ``vit_b_16`` is given
  ``image_size`` directly and cuts the image into 16x16 patches, so the size
  must be a positive multiple of 16.
"""

from __future__ import annotations

import math

import torchvision
from torch import nn

from silo_core.models.registry import check_image_size

__all__ = ["VIT_PATCH_SIZE"]

VIT_PATCH_SIZE = 16


def _pair(size: tuple[int, ...]) -> tuple[int, int]:
    """A 2-d convolution's size, which torch types as a tuple of any length."""
    height, width = size
    return height, width


def _conv_with_inputs(old: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    """A fresh copy of ``old`` that reads ``in_channels`` channels."""
    return nn.Conv2d(
        in_channels,
        old.out_channels,
        kernel_size=_pair(old.kernel_size),
        stride=_pair(old.stride),
        padding=old.padding if isinstance(old.padding, str) else _pair(old.padding),
        dilation=_pair(old.dilation),
        groups=old.groups,
        bias=old.bias is not None,
        padding_mode=old.padding_mode,
    )


def _build_resnet(name: str, in_channels: int, num_classes: int) -> nn.Module:
    # torchvision has no type information: its models are Any until returned.
    model = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    if in_channels != 3:
        conv = _conv_with_inputs(model.conv1, in_channels)
        # Same rule torchvision applies to every ResNet convolution.
        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        model.conv1 = conv
    resnet: nn.Module = model
    return resnet


def build_resnet18(*, in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    """Builder of torchvision's ResNet-18 (no pretrained weights)."""
    del image_size  # adaptive pooling: any size works, see the module docstring
    return _build_resnet("resnet18", in_channels, num_classes)


def build_resnet50(*, in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    """Builder of torchvision's ResNet-50 (no pretrained weights)."""
    del image_size  # adaptive pooling: any size works, see the module docstring
    return _build_resnet("resnet50", in_channels, num_classes)


def build_vit_b_16(*, in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    """Builder of torchvision's ViT-B/16 at the requested image size.

    The position embeddings are sized for ``(image_size // 16) ** 2`` patches,
    so a model built for one size only accepts that size.
    """
    check_image_size("vit_b_16", image_size, minimum=VIT_PATCH_SIZE, multiple_of=VIT_PATCH_SIZE)
    model = torchvision.models.get_model(
        "vit_b_16", weights=None, num_classes=num_classes, image_size=image_size
    )
    if in_channels != 3:
        conv = _conv_with_inputs(model.conv_proj, in_channels)
        # Same patch-embedding init torchvision uses: truncated normal, 1/fan_in variance.
        fan_in = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
        nn.init.trunc_normal_(conv.weight, std=math.sqrt(1.0 / fan_in))
        if conv.bias is not None:
            nn.init.zeros_(conv.bias)
        model.conv_proj = conv
    vit: nn.Module = model
    return vit
