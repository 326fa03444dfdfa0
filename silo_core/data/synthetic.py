"""A synthetic, learnable image set generated on the device.

Benchmarks and tests need data that costs nothing to obtain yet still rewards learning, so
that accuracy curves mean something. Each class has a fixed, smooth random template and each
image is its class template plus Gaussian noise; a model must average out the noise to
recognise the template.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from .base import DatasetInfo, Splits, positive_int_option, resolve_options
from .memory import InMemorySource, channel_stats
from .partition import stratified_split

DEFAULT_OPTIONS: dict[str, Any] = {
    "num_train": 2048,
    "num_test": 512,
    "channels": 3,
    "image_size": 32,
    "num_classes": 10,
}
#: Standard deviation of the per-pixel noise, relative to unit-variance templates.
NOISE_STD = 1.0


def _templates(
    num_classes: int, channels: int, size: int, generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    """Smooth unit-variance class templates: coarse noise upsampled to full size.

    Low-frequency templates give convolutions local structure to pick up, unlike i.i.d.
    pixels, which only a fully connected layer could exploit.
    """
    coarse = max(2, size // 4)
    base = torch.randn(num_classes, channels, coarse, coarse, generator=generator, device=device)
    smooth = F.interpolate(base, size=(size, size), mode="bilinear", align_corners=False)
    centred = smooth - smooth.mean(dim=(1, 2, 3), keepdim=True)
    return centred / centred.std(dim=(1, 2, 3), keepdim=True).clamp_min(1e-6)


def _samples(
    templates: torch.Tensor, count: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` balanced, shuffled examples of template plus noise."""
    device = templates.device
    num_classes = templates.shape[0]
    labels = torch.arange(count, device=device) % num_classes
    labels = labels[torch.randperm(count, generator=generator, device=device)]
    noise = torch.randn((count, *templates.shape[1:]), generator=generator, device=device)
    return templates[labels] + NOISE_STD * noise, labels


def load_synthetic_splits(
    *,
    device: torch.device,
    root: str | None = None,
    download: bool = False,
    val_fraction: float,
    split_seed: int,
    options: Mapping[str, Any] | None,
) -> Splits:
    """Generate train/val (from ``num_train``) and test (``num_test``) from ``split_seed``."""
    del root, download  # synthetic data is generated: nothing to find on disk or fetch
    opts = resolve_options("synthetic", options, DEFAULT_OPTIONS)
    num_train = positive_int_option("synthetic", "num_train", opts["num_train"])
    num_test = positive_int_option("synthetic", "num_test", opts["num_test"])
    channels = positive_int_option("synthetic", "channels", opts["channels"])
    size = positive_int_option("synthetic", "image_size", opts["image_size"])
    num_classes = positive_int_option("synthetic", "num_classes", opts["num_classes"], minimum=2)

    generator = torch.Generator(device=device)
    generator.manual_seed(split_seed)
    templates = _templates(num_classes, channels, size, generator, device)
    pool_images, pool_labels = _samples(templates, num_train, generator)
    test_images, test_labels = _samples(templates, num_test, generator)

    train_idx, val_idx = stratified_split(pool_labels.cpu().numpy(), val_fraction, split_seed)
    train_index = torch.from_numpy(train_idx).to(device)
    val_index = torch.from_numpy(val_idx).to(device)
    train_images = pool_images[train_index]
    mean, std = channel_stats(train_images)

    def source(images: torch.Tensor, labels: torch.Tensor) -> InMemorySource:
        return InMemorySource(
            images, labels, mean=mean, std=std, crop_padding=max(1, size // 8), flip=True
        )

    return Splits(
        info=DatasetInfo(in_channels=channels, image_size=size, num_classes=num_classes),
        train=source(train_images, pool_labels[train_index]),
        val=source(pool_images[val_index], pool_labels[val_index]),
        test=source(test_images, test_labels),
        augment_default=False,
    )
