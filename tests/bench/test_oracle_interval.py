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
    assert (profile.low, profile.high) == (0.01, 0.1)
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


def test_a_peak_just_outside_one_se_is_left_out():
    means = (0.93 - 1.01 * SE, 0.80, 0.93, 0.83)
    profile = grid_profile(GRID, [[m + s for m in means] for s in SPREAD])
    assert (profile.low, profile.high) == (0.1, 0.1)


def test_ties_go_to_the_first_peak():
    profile = grid_profile([0.1, 0.3], [[0.9, 0.9], [0.8, 0.8]])
    assert profile.best == 0
    assert (profile.low, profile.high) == (0.1, 0.3)


def test_profile_refuses_one_seed_and_ragged_rows():
    with pytest.raises(ValueError, match="2 seeds"):
        grid_profile(GRID, [list(MEANS)])
    with pytest.raises(ValueError, match="one accuracy per grid peak"):
        grid_profile(GRID, [list(MEANS), [0.9]])
