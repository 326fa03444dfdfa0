"""Data-set registry: every supported data set as device-ready train/val/test splits."""

from .base import (
    DatasetInfo,
    DatasetNotFoundError,
    DataSource,
    Splits,
    UnknownDatasetError,
    default_data_root,
)
from .registry import DATASET_NAMES, load_dataset

__all__ = [
    "DATASET_NAMES",
    "DataSource",
    "DatasetInfo",
    "DatasetNotFoundError",
    "Splits",
    "UnknownDatasetError",
    "default_data_root",
    "load_dataset",
]
