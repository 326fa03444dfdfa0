"""Name -> loader dispatch: the single entry point the training engine calls."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from silo_core.names import DATASET_NAMES

from .base import Splits, UnknownDatasetError
from .cifar import load_cifar_splits
from .digits import load_digits_splits
from .imagefolder import load_imagefolder_splits
from .synthetic import load_synthetic_splits


def load_dataset(
    name: str,
    *,
    device: torch.device,
    root: str | None = None,
    download: bool = False,
    val_fraction: float = 0.1,
    split_seed: int = 0,
    options: Mapping[str, Any] | None = None,
) -> Splits:
    """Load data set ``name`` as train/val/test splits on ``device``.

    ``split_seed`` alone decides which examples land in which split, so runs that differ
    only in their training seed are evaluated on exactly the same held-out data.
    ``root`` and ``download`` matter only for data sets stored on disk.
    """
    if name not in DATASET_NAMES:
        raise UnknownDatasetError(
            f"unknown data set {name!r}; allowed names: {', '.join(DATASET_NAMES)}"
        )
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    device = torch.device(device)
    if name == "digits":
        return load_digits_splits(
            device=device, val_fraction=val_fraction, split_seed=split_seed, options=options
        )
    if name == "synthetic":
        return load_synthetic_splits(
            device=device, val_fraction=val_fraction, split_seed=split_seed, options=options
        )
    if name == "imagefolder":
        return load_imagefolder_splits(
            device=device,
            root=root,
            val_fraction=val_fraction,
            split_seed=split_seed,
            options=options,
        )
    return load_cifar_splits(
        name,
        device=device,
        root=root,
        download=download,
        val_fraction=val_fraction,
        split_seed=split_seed,
        options=options,
    )
