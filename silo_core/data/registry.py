"""Loading a data set by name: the single entry point the training engine calls."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from silo_core.plugins import DATASETS, UnknownNameError

from .base import DatasetLoader, Splits, UnknownDatasetError


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
    """Load data set ``name`` (built in or plug-in) as train/val/test splits on ``device``.

    ``split_seed`` alone decides which examples land in which split, so runs that differ
    only in their training seed are evaluated on exactly the same held-out data.
    ``root`` and ``download`` matter only for data sets stored on disk. A plug-in's
    failure to import or to load raises ``silo_core.plugins.PluginError`` naming it.
    """
    try:
        entry = DATASETS.get(name)
    except UnknownNameError as exc:
        raise UnknownDatasetError(str(exc)) from None
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    loader: DatasetLoader = entry.load()
    with entry.blamed("load its data"):
        splits = loader(
            device=torch.device(device),
            root=root,
            download=download,
            val_fraction=val_fraction,
            split_seed=split_seed,
            options=options,
        )
        if not isinstance(splits, Splits):
            raise TypeError(f"it returned a {type(splits).__name__}, not silo_core.data.Splits")
    return splits
