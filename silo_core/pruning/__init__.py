"""Unstructured pruning: which weights are prunable, masks, and how to choose."""

from silo_core.pruning.masks import MaskSet, PruningMethod
from silo_core.pruning.selection import removal_count, smallest_k
from silo_core.pruning.targets import count_parameters, is_exactly_zero, prunable_weights

__all__ = [
    "MaskSet",
    "PruningMethod",
    "count_parameters",
    "is_exactly_zero",
    "prunable_weights",
    "removal_count",
    "smallest_k",
]
