"""bench/study/oracle_interval.py on made-up grid accuracies."""

from __future__ import annotations

import math

import pytest
from study.oracle_interval import grid_profile

GRID = [0.01, 0.03, 0.1, 0.3]
# Four seeds; per peak the mean is 0.92, 0.80, 0.93, 0.83 and the sample sd
# sqrt(0.002 / 3) (values 0.03 and 0.01 either side of the mean).
SPREAD = (-0.03, -0.01, 0.01, 0.03)
MEANS = (0.92, 0.80, 0.93, 0.83)
ACCURACIES = [[m + s for m in MEANS] for s in SPREAD]
SE = math.sqrt(0.002 / 3) / 2


def test_profile_by_hand():
    profile = grid_profile(GRID, ACCURACIES)
    assert profile.mean == pytest.approx(MEANS)
    assert profile.se == pytest.approx([SE] * 4)
    assert profile.n == 4
    assert profile.best_peak == 0.1
    # 0.92 is within one SE (0.0129) of 0.93; 0.83 and 0.80 are not.
    assert profile.interval() == (0.01, 0.1)
    assert [profile.is_good(i) for i in range(4)] == [True, False, True, False]


def test_the_interval_is_the_range_of_the_good_peaks():
    profile = grid_profile(GRID, ACCURACIES)
    assert profile.contains(0.01) and profile.contains(0.1)
    assert profile.contains(0.03)  # between two good peaks, though not good itself
    assert not profile.contains(0.3) and not profile.contains(0.005)


def test_a_peak_a_hair_past_an_end_counts_as_at_it():
    profile = grid_profile(GRID, ACCURACIES)
    assert profile.contains(0.10004) and profile.contains(0.0099995)
    assert not profile.contains(0.102) and not profile.contains(0.102, tolerance=0.0)
    assert not profile.contains(0.10004, tolerance=0.0)


def test_the_nearest_grid_peak_on_a_log_scale():
    profile = grid_profile(GRID, ACCURACIES)  # good: 0.01 and 0.1
    assert profile.nearest_is_good(0.15)  # nearer 0.1 than 0.3 on a log scale
    assert not profile.nearest_is_good(0.2)  # nearer 0.3
    assert not profile.nearest_is_good(0.02)  # nearer 0.03, which is not good
    assert profile.nearest_is_good(0.015)  # nearer 0.01


def test_a_peak_just_outside_one_se_is_left_out():
    means = (0.93 - 1.01 * SE, 0.80, 0.93, 0.83)
    profile = grid_profile(GRID, [[m + s for m in means] for s in SPREAD])
    assert profile.interval() == (0.1, 0.1)


def test_ties_go_to_the_first_peak():
    profile = grid_profile([0.1, 0.3], [[0.9, 0.9], [0.8, 0.8]])
    assert profile.best == 0
    assert profile.interval() == (0.1, 0.3)


def test_profile_refuses_one_seed_and_ragged_rows():
    with pytest.raises(ValueError, match="2 seeds"):
        grid_profile(GRID, [list(MEANS)])
    with pytest.raises(ValueError, match="one accuracy per grid peak"):
        grid_profile(GRID, [list(MEANS), [0.9]])


def test_the_paired_rule_sees_a_shortfall_that_the_seeds_spread_hides():
    # The seeds' networks differ by 10 points; peak 0.1 trails peak 0.3 by
    # exactly 2 points in every seed.
    offsets = (0.0, 0.1, 0.2, 0.3)
    profile = grid_profile([0.1, 0.3], [[0.6 + o, 0.62 + o] for o in offsets])
    assert profile.best_peak == 0.3
    assert profile.diff_se == pytest.approx((0.0, 0.0))
    assert profile.interval() == (0.1, 0.3)  # one plain SE is 6.5 points
    assert profile.interval(paired=True) == (0.3, 0.3)
    assert profile.contains(0.1) and not profile.contains(0.1, paired=True)


def test_the_paired_rule_by_hand():
    # Shortfalls of peak 0.1 from the best: 0.01, 0.03, 0.01, 0.03 (mean 0.02,
    # sample sd sqrt(0.0004 / 3), SE half that, 0.0058): more than one SE, left out.
    # Shortfalls of peak 0.01: -0.01, 0.03, -0.01, 0.03 (mean 0.01, SE 0.0115): kept.
    best = [0.90, 0.92, 0.94, 0.96]
    first = (-0.01, 0.03, -0.01, 0.03)
    second = (0.01, 0.03, 0.01, 0.03)
    rows = [[b - f, b - g, b] for b, f, g in zip(best, first, second, strict=True)]
    profile = grid_profile([0.01, 0.1, 0.3], rows)
    se = math.sqrt(0.0004 / 3) / 2
    assert profile.diff_se == pytest.approx((2 * se, se, 0.0))
    assert [profile.is_good(i, paired=True) for i in range(3)] == [True, False, True]
    assert profile.interval(paired=True) == (0.01, 0.3)
