"""Data-set registry: every supported data set as device-ready train/val/test splits."""

from .base import (
    DatasetInfo,
    DatasetLoader,
    DatasetNotFoundError,
    DataSource,
    Splits,
    UnknownDatasetError,
    default_data_root,
)
from .registry import load_dataset

__all__ = [
    "DataSource",
    "DatasetInfo",
    "DatasetLoader",
    "DatasetNotFoundError",
    "Splits",
    "UnknownDatasetError",
    "default_data_root",
    "load_dataset",
]
