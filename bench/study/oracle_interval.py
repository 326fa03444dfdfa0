"""The Oracle's validation accuracy over its whole grid, and its good interval.

Every Oracle cycle retrains the pruned network once per grid peak and records
each trial's best validation accuracy (``extras["oracle"]`` of the cycle row).
Over seeds, each peak has a mean and a standard error (sample sd / sqrt(n)).
The good set is every peak whose mean lies within one standard error of the
best mean (the best peak's own standard error); as the grid is discrete, the
good interval is [lowest, highest] peak of that set, and a schedule's max_lr
"falls in it" when it lies within that range (to 1% at either end).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, replace


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

    def is_good(self, index: int) -> bool:
        """Whether grid peak ``index`` lies within one standard error of the best."""
        return self.mean[index] >= self.mean[self.best] - self.se[self.best] - 1e-12

    def contains(self, max_lr: float, tolerance: float = 0.01) -> bool:
        """Whether ``max_lr`` lies within the good interval; one within
        ``tolerance`` (relative) of an end counts as at it, so that a peak a
        hair above a grid value (0.10004 against 0.1) is not called outside
        (the default grid's steps are 78% apart)."""
        return self.low * (1 - tolerance) <= max_lr <= self.high * (1 + tolerance)


def grid_profile(grid: Sequence[float], accuracies: Sequence[Sequence[float]]) -> GridProfile:
    """The profile of ``accuracies``: one list per seed, one value per grid peak."""
    n = len(accuracies)
    if n < 2:
        raise ValueError(f"a standard error needs at least 2 seeds, got {n}")
    if any(len(row) != len(grid) for row in accuracies) or not grid:
        raise ValueError(f"every seed needs one accuracy per grid peak ({len(grid)})")
    columns = [[row[i] for row in accuracies] for i in range(len(grid))]
    mean = tuple(statistics.fmean(column) for column in columns)
    se = tuple(statistics.stdev(column) / math.sqrt(n) for column in columns)
    best = max(range(len(grid)), key=lambda i: (mean[i], -i))
    profile = GridProfile(tuple(grid), mean, se, n, best, grid[best], grid[best])
    good = [peak for i, peak in enumerate(grid) if profile.is_good(i)]
    return replace(profile, low=min(good), high=max(good))
