"""The Oracle's validation accuracy over its whole grid, and its good interval.

Every Oracle cycle retrains the pruned network once per grid peak and records
each trial's best validation accuracy (``extras["oracle"]`` of the cycle row).
Over seeds, each peak has a mean and a standard error (sample sd / sqrt(n)).
The good set is every peak whose mean lies within one standard error of the
best mean (the best peak's own standard error); as the grid is discrete, the
good interval is [lowest, highest] peak of that set, and a schedule's max_lr
"falls in it" when it lies within that range.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class GridProfile:
    """One cycle's validation accuracy per grid peak, over seeds."""

    grid: tuple[float, ...]
    mean: tuple[float, ...]
    se: tuple[float, ...]
    n: int
    best: int  # index of the best mean (the first, on a tie)
    low: float  # lowest peak within one standard error of the best
    high: float  # highest such peak

    @property
    def best_peak(self) -> float:
        return self.grid[self.best]

    def contains(self, max_lr: float) -> bool:
        """Whether ``max_lr`` lies within the good interval."""
        return self.low <= max_lr <= self.high


def grid_profile(grid: Sequence[float], accuracies: Sequence[Sequence[float]]) -> GridProfile:
    """The profile of ``accuracies``: one list per seed, one value per grid peak."""
    n = len(accuracies)
    if n < 2:
        raise ValueError(f"a standard error needs at least 2 seeds, got {n}")
    if any(len(row) != len(grid) for row in accuracies):
        raise ValueError(f"every seed needs one accuracy per grid peak ({len(grid)})")
    columns = [[row[i] for row in accuracies] for i in range(len(grid))]
    mean = tuple(statistics.fmean(column) for column in columns)
    se = tuple(statistics.stdev(column) / math.sqrt(n) for column in columns)
    best = max(range(len(grid)), key=lambda i: (mean[i], -i))
    floor = mean[best] - se[best] - 1e-12  # the margin keeps equal means inside
    good = [peak for peak, m in zip(grid, mean, strict=True) if m >= floor]
    return GridProfile(tuple(grid), mean, se, n, best, min(good), max(good))


def cycle_profiles(tables: Sequence[Sequence[dict[str, Any]]]) -> dict[int, GridProfile]:
    """Per Oracle cycle, the profile over seeds; ``tables`` holds one cycle
    table (``CycleResult.to_dict()`` rows) per seed."""
    profiles = {}
    for rows in zip(*tables, strict=True):
        searched = [row["extras"].get("oracle") for row in rows]
        if any(s is None for s in searched):
            continue  # the dense cycle is trained, not searched
        grid = searched[0]["grid"]
        if any(s["grid"] != grid for s in searched):
            raise ValueError(f"cycle {rows[0]['cycle']}: the seeds searched different grids")
        profiles[rows[0]["cycle"]] = grid_profile(grid, [s["best_val_accuracy"] for s in searched])
    return profiles
