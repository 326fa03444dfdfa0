"""CIFAR-10 and CIFAR-100, held entirely on the training device.

The whole training set is only ~150 MB as uint8, so it is copied to the device once and
every batch is cropped, flipped and normalised there; no host-side loader is needed.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.datasets import CIFAR10, CIFAR100

from .base import (
    DatasetInfo,
    DatasetLoader,
    DatasetNotFoundError,
    Splits,
    missing_data_message,
    resolve_options,
    resolve_root,
)
from .memory import InMemorySource, channel_stats
from .partition import stratified_split

#: Zero pixels added on each side before the random 32x32 crop.
CROP_PADDING = 4

_VARIANTS: dict[str, tuple[type[CIFAR10], int]] = {
    "cifar10": (CIFAR10, 10),
    "cifar100": (CIFAR100, 100),
}


def _read(
    name: str, dataset_cls: type[CIFAR10], root: Path, *, train: bool, download: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Read one official split as (NCHW uint8 images, int64 labels)."""
    folder = root / dataset_cls.base_folder
    if not download and not folder.is_dir():
        raise DatasetNotFoundError(missing_data_message(name, folder, can_download=True))
    try:
        dataset = dataset_cls(str(root), train=train, download=download)
    except RuntimeError as error:
        # torchvision reports missing and corrupt files alike as a RuntimeError.
        raise DatasetNotFoundError(
            f"{missing_data_message(name, folder, can_download=True)} "
            f"(the folder exists but is incomplete or corrupt: {error})"
        ) from error
    # torchvision exposes an NHWC view of NCHW-stored pickles; undoing it copies nothing.
    images = np.ascontiguousarray(dataset.data.transpose(0, 3, 1, 2))
    return images, np.asarray(dataset.targets, dtype=np.int64)


def _to_device(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """Contiguous NCHW uint8 array -> tensor on ``device``."""
    return torch.from_numpy(images).to(device)


def load_cifar_splits(
    name: str,
    *,
    device: torch.device,
    root: str | None,
    download: bool,
    val_fraction: float,
    split_seed: int,
    options: Mapping[str, Any] | None,
) -> Splits:
    """Load ``cifar10`` or ``cifar100``.

    Validation comes from the official training set (stratified by ``split_seed``); the
    official test set is the test split. Images stay uint8 on the device and are normalised
    per batch with the train split's per-channel statistics.
    """
    dataset_cls, num_classes = _VARIANTS[name]
    resolve_options(name, options, {})
    data_root = resolve_root(root)

    train_images, train_labels = _read(name, dataset_cls, data_root, train=True, download=download)
    test_images, test_labels = _read(name, dataset_cls, data_root, train=False, download=False)
    train_idx, val_idx = stratified_split(train_labels, val_fraction, split_seed)

    pool = _to_device(train_images, device)
    pool_labels = torch.from_numpy(train_labels).to(device)
    train_index = torch.from_numpy(train_idx).to(device)
    val_index = torch.from_numpy(val_idx).to(device)
    train_split = pool[train_index]
    mean, std = channel_stats(train_split)

    def source(images: torch.Tensor, labels: torch.Tensor) -> InMemorySource:
        return InMemorySource(
            images, labels, mean=mean, std=std, crop_padding=CROP_PADDING, flip=True
        )

    return Splits(
        info=DatasetInfo(in_channels=3, image_size=32, num_classes=num_classes),
        train=source(train_split, pool_labels[train_index]),
        val=source(pool[val_index], pool_labels[val_index]),
        test=source(_to_device(test_images, device), torch.from_numpy(test_labels).to(device)),
        augment_default=True,
    )


# The loaders the data-set registry names (silo_core.plugins.DATASETS).
load_cifar10: DatasetLoader = partial(load_cifar_splits, "cifar10")
load_cifar100: DatasetLoader = partial(load_cifar_splits, "cifar100")
