"""bench/study/paired.py on made-up differences whose interval is known by hand."""

from __future__ import annotations

import math

import pytest
from study.paired import (
    PairedDifference,
    count_wins,
    paired_difference,
    significant_ranges,
    t_interval,
)

# Student's t quantiles at 0.975 from a printed table (4 and 9 degrees of freedom).
T_975_DF4 = 2.7764451051977987
T_975_DF9 = 2.2621571627409915


def test_interval_by_hand_excludes_zero():
    # mean 3, sample sd sqrt(2.5), n 5
    mean, low, high = t_interval([1.0, 2.0, 3.0, 4.0, 5.0])
    half = T_975_DF4 * math.sqrt(2.5) / math.sqrt(5)
    assert mean == pytest.approx(3.0)
    assert (low, high) == pytest.approx((3.0 - half, 3.0 + half))
    assert low == pytest.approx(1.036757, abs=1e-6)  # 3 - 1.963243


def test_interval_by_hand_holds_zero():
    # mean 0.2, sample sd sqrt(3.7), n 5
    mean, low, high = t_interval([-2.0, -1.0, 0.0, 1.0, 3.0])
    half = T_975_DF4 * math.sqrt(3.7) / math.sqrt(5)
    assert (mean, low, high) == pytest.approx((0.2, 0.2 - half, 0.2 + half))
    assert low < 0 < high


def test_interval_of_ten_seeds_with_a_known_mean_and_sd():
    # +-1 around 0.5, five each way: mean 0.5, sample sd sqrt(10 / 9)
    differences = [1.5, -0.5] * 5
    mean, low, high = t_interval(differences)
    half = T_975_DF9 * math.sqrt(10 / 9) / math.sqrt(10)
    assert (mean, low, high) == pytest.approx((0.5, 0.5 - half, 0.5 + half))
    assert low < 0  # half is 0.754: zero stays inside


def test_a_wider_confidence_gives_a_wider_interval():
    _, low95, high95 = t_interval([1.0, 2.0, 3.0, 4.0, 5.0])
    _, low99, high99 = t_interval([1.0, 2.0, 3.0, 4.0, 5.0], confidence=0.99)
    assert low99 < low95 and high99 > high95


def test_equal_differences_give_a_point_interval():
    assert t_interval([0.0, 0.0, 0.0]) == (0.0, 0.0, 0.0)


def test_interval_refuses_one_seed_and_a_bad_confidence():
    with pytest.raises(ValueError, match="at least 2"):
        t_interval([1.0])
    with pytest.raises(ValueError, match="confidence"):
        t_interval([1.0, 2.0], confidence=1.0)


def test_win_counting_keeps_ties_apart():
    assert count_wins([0.01, -0.02, 0.0, 0.03, 0.0, -0.0]) == (2, 3, 1)


def test_paired_difference_pairs_seed_by_seed():
    silo = [0.90, 0.92, 0.95, 0.91, 0.93]
    baseline = [0.89, 0.90, 0.92, 0.87, 0.88]  # silo - baseline: 0.01 .. 0.05
    result = paired_difference(silo, baseline)
    half = T_975_DF4 * math.sqrt(2.5) / math.sqrt(5) / 100
    assert result.mean == pytest.approx(0.03)
    assert (result.low, result.high) == pytest.approx((0.03 - half, 0.03 + half))
    assert (result.n, result.wins, result.ties, result.losses) == (5, 5, 0, 0)
    assert result.direction == 1
    assert paired_difference(baseline, silo).direction == -1


def test_paired_difference_refuses_unpaired_samples():
    with pytest.raises(ValueError, match="length"):
        paired_difference([1.0, 2.0], [1.0, 2.0, 3.0])


def _difference(direction: int) -> PairedDifference:
    low, high = {1: (0.1, 0.3), -1: (-0.3, -0.1), 0: (-0.1, 0.1)}[direction]
    return PairedDifference((low + high) / 2, low, high, 10, 5, 0, 5)


def test_headline_ranges_are_runs_of_one_sign():
    sparsities = [0.2, 0.36, 0.488, 0.59, 0.672, 0.738, 0.79]
    directions = [0, 1, 1, 0, -1, -1, 1]
    ranges = significant_ranges(sparsities, [_difference(d) for d in directions])
    assert [(r.direction, r.first, r.last, r.points) for r in ranges] == [
        (1, 0.36, 0.488, 2),
        (-1, 0.672, 0.738, 2),
        (1, 0.79, 0.79, 1),
    ]


def test_no_headline_range_when_every_interval_holds_zero():
    assert significant_ranges([0.2, 0.36], [_difference(0), _difference(0)]) == []
