"""The Oracle's validation accuracy over its whole grid, and its good interval.

Every Oracle cycle retrains the pruned network once per grid peak and records
each trial's best validation accuracy (``extras["oracle"]`` of the cycle row).
Over seeds, each peak has a mean and a standard error (sample sd / sqrt(n)).
The good set is every peak whose mean lies within one standard error of the
best mean (the best peak's own standard error); as the grid is discrete, the
good interval is [lowest, highest] peak of that set, and a schedule's max_lr
"falls in it" when it lies within that range (to 1% at either end). As a
value between two grid peaks can lie just outside a one-peak interval, a
second reading asks whether the grid peak nearest to it is good.

That standard error holds how much the seeds' networks differ, which can be
far more than the peaks differ. Within one seed every trial starts from the
same network, so the peaks can also be compared seed by seed: the paired rule
keeps a peak when its mean shortfall from the best is within one standard
error of that shortfall over seeds (``diff_se``).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

TIE = 1e-12  # keeps equal means inside, whatever the rounding


@dataclass(frozen=True)
class GridProfile:
    """One cycle's validation accuracy per grid peak, over seeds."""

    grid: tuple[float, ...]
    mean: tuple[float, ...]
    se: tuple[float, ...]
    diff_se: tuple[float, ...]  # SE over seeds of (this peak - the best peak); 0 at the best
    n: int
    best: int  # index of the best mean (the first, on a tie)

    @property
    def best_peak(self) -> float:
        return self.grid[self.best]

    def is_good(self, index: int, paired: bool = False) -> bool:
        """Whether grid peak ``index`` lies within one standard error of the
        best: the best's own SE, or (``paired``) the SE of its shortfall."""
        shortfall = self.mean[self.best] - self.mean[index]
        margin = self.diff_se[index] if paired else self.se[self.best]
        return shortfall <= margin + TIE

    def interval(self, paired: bool = False) -> tuple[float, float]:
        """[lowest, highest] good peak."""
        good = [peak for i, peak in enumerate(self.grid) if self.is_good(i, paired)]
        return min(good), max(good)

    def contains(self, max_lr: float, paired: bool = False, tolerance: float = 0.01) -> bool:
        """Whether ``max_lr`` lies within the good interval; one within
        ``tolerance`` (relative) of an end counts as at it, so that a peak a
        hair above a grid value (0.10004 against 0.1) is not called outside
        (the default grid's steps are 78% apart)."""
        low, high = self.interval(paired)
        return low * (1 - tolerance) <= max_lr <= high * (1 + tolerance)

    def nearest_is_good(self, max_lr: float, paired: bool = False) -> bool:
        """Whether the grid peak nearest to ``max_lr`` (on a log scale) is good:
        a reading of "inside" that a value between two grid peaks can meet."""
        distance = [abs(math.log(max_lr / peak)) for peak in self.grid]
        return self.is_good(distance.index(min(distance)), paired)


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
    diff_se = tuple(
        statistics.stdev([a - b for a, b in zip(column, columns[best], strict=True)]) / math.sqrt(n)
        for column in columns
    )
    return GridProfile(tuple(grid), mean, se, diff_se, n, best)
