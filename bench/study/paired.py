"""Paired comparison of two schedules over the same seeds.

A seed fixes the dense network and the batches every schedule sees, so two
schedules are compared seed by seed: ``d_i = a_i - b_i``. The interval is the
paired t interval ``mean(d) +- t(1 - (1 - c) / 2, n - 1) * sd(d) / sqrt(n)``,
with ``sd`` the sample standard deviation (n - 1 in the denominator) and ``t``
Student's quantile from scipy (scikit-learn, which the engine needs, brings it).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from scipy.stats import t as student_t  # type: ignore[import-untyped]  # no stubs

CONFIDENCE = 0.95


@dataclass(frozen=True)
class PairedDifference:
    """``a - b`` over n seeds: its mean, its t interval and how the seeds split."""

    mean: float
    low: float
    high: float
    n: int
    wins: int  # seeds where a is above b
    ties: int
    losses: int

    @property
    def direction(self) -> int:
        """+1 when the interval lies above zero, -1 below it, 0 when it holds zero."""
        if self.low > 0:
            return 1
        if self.high < 0:
            return -1
        return 0


def t_interval(
    differences: Sequence[float], confidence: float = CONFIDENCE
) -> tuple[float, float, float]:
    """(mean, low, high) of the paired t interval of ``differences``."""
    n = len(differences)
    if n < 2:
        raise ValueError(f"a t interval needs at least 2 differences, got {n}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    mean = statistics.fmean(differences)
    quantile = float(student_t.ppf(1.0 - (1.0 - confidence) / 2.0, n - 1))
    half = quantile * statistics.stdev(differences) / math.sqrt(n)
    return mean, mean - half, mean + half


def count_wins(differences: Sequence[float], tie: float = 1e-12) -> tuple[int, int, int]:
    """(wins, ties, losses): differences above ``tie``, within it of zero, below ``-tie``."""
    wins = sum(1 for d in differences if d > tie)
    losses = sum(1 for d in differences if d < -tie)
    return wins, len(differences) - wins - losses, losses


def paired_difference(
    a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE
) -> PairedDifference:
    """``a - b`` seed by seed; ``a[i]`` and ``b[i]`` must come from the same seed."""
    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length: {len(a)} and {len(b)}")
    differences = [x - y for x, y in zip(a, b, strict=True)]
    mean, low, high = t_interval(differences, confidence)
    wins, ties, losses = count_wins(differences)
    return PairedDifference(mean, low, high, len(differences), wins, ties, losses)


@dataclass(frozen=True)
class SignificantRange:
    """Consecutive points whose intervals exclude zero the same way."""

    direction: int  # +1: a above b throughout; -1: below
    first: float  # the first point's sparsity
    last: float
    points: int


def significant_ranges(
    sparsities: Sequence[float], differences: Sequence[PairedDifference]
) -> list[SignificantRange]:
    """The runs of consecutive points (in the order given) whose intervals
    exclude zero, each run on one side of zero."""
    if len(sparsities) != len(differences):
        raise ValueError("one difference per sparsity")
    ranges: list[SignificantRange] = []
    for sparsity, difference in zip(sparsities, differences, strict=True):
        direction = difference.direction
        if direction == 0:
            ranges.append(SignificantRange(0, sparsity, sparsity, 0))  # a break
            continue
        last = ranges[-1] if ranges else None
        if last is not None and last.direction == direction:
            ranges[-1] = SignificantRange(direction, last.first, sparsity, last.points + 1)
        else:
            ranges.append(SignificantRange(direction, sparsity, sparsity, 1))
    return [r for r in ranges if r.direction != 0]
