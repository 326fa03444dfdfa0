"""bench/team_day_metrics.py on made-up days whose figures are known by hand."""

from __future__ import annotations

import pytest
from team_day_jobs import USERS, workload
from team_day_metrics import (
    JobRecord,
    QuotaViolations,
    contended_seconds,
    fairness,
    jain,
    quota_violations,
    segments,
    utilisation_while_waiting,
    waits_by_priority,
    water_fill,
)


def job(user, gpus, submit, start, end, priority=0) -> JobRecord:
    return JobRecord(user, priority, gpus, submit, start, end)


# Capacity 2. a holds 1 GPU over [0, 10); b holds 1 over [0, 4) and waits for a
# second from 2 to 4 (it starts when the first ends); c waits from 5 to 10 for
# a 1-GPU job that never starts, while 1 GPU stays free (a job that does not fit
# would look the same).
DAY = [
    job("a", 1.0, 0, 0, 10),
    job("b", 1.0, 0, 0, 4),
    job("b", 1.0, 2, 4, 8),
    job("c", 1.0, 5, None, None, priority=-1),
]


def test_segments_hold_and_wait_as_drawn():
    cut = segments(DAY, until=10)
    assert [(s.begin, s.end) for s in cut] == [(0, 2), (2, 4), (4, 5), (5, 8), (8, 10)]
    assert cut[1].held == {"a": 1.0, "b": 1.0} and cut[1].waiting == {"b": 1.0}
    assert cut[2].waiting == {}
    assert cut[4].held == {"a": 1.0} and cut[4].waiting == {"c": 1.0}


def test_utilisation_counts_only_while_work_waits():
    cut = segments(DAY, until=10)
    assert contended_seconds(cut) == 2 + 5
    # [2, 4): 2 of 2 held; [5, 8): 2 of 2; [8, 10): 1 of 2.
    assert utilisation_while_waiting(cut, capacity=2) == pytest.approx((4 + 6 + 2) / (2 * 7))
    assert utilisation_while_waiting(segments(DAY[:1], until=10), capacity=2) is None


def test_water_fill_gives_small_demands_in_full_and_shares_the_rest():
    assert water_fill({"a": 0.5, "b": 3.0, "c": 3.0}, 4) == {"a": 0.5, "b": 1.75, "c": 1.75}
    assert water_fill({"a": 1.0, "b": 1.0}, 4) == {"a": 1.0, "b": 1.0}
    assert water_fill({}, 4) == {}


def test_fairness_over_the_users_with_work_waiting():
    fair = fairness(segments(DAY, until=10), capacity=2, quota=None)
    # b waits over [2, 4): demands a 1, b 2 -> shares 1 and 1; b holds 1.
    # c waits over [5, 10): [5, 8) demands a 1, b 1, c 1 -> 2/3 each, c holds 0;
    # [8, 10) a 1, c 1 -> 1 each, c holds 0.
    assert fair.received == {"b": 2.0, "c": 0.0}
    assert fair.fair == pytest.approx({"b": 2.0, "c": 3 * 2 / 3 + 2})
    assert fair.ratio("b") == 1.0 and fair.ratio("c") == 0.0 and fair.ratio("a") is None
    assert fair.jain == pytest.approx(0.5)  # one of two got all of its share, one none


def test_jain_index():
    assert jain([1.0, 1.0, 1.0]) == 1.0
    assert jain([1.0, 0.0]) == 0.5
    assert jain([]) is None


def test_a_quota_caps_demand_and_counts_each_episode_once():
    day = [
        job("a", 1.0, 0, 0, 6),
        job("a", 1.0, 1, 2, 4),  # a holds 2 over [2, 4)
        job("a", 1.0, 1, 5, 6),  # and again over [5, 6)
    ]
    cut = segments(day, until=6)
    assert quota_violations(cut, quota=1.0) == QuotaViolations(2, 2 * 1.0 + 1 * 1.0, 2.0)
    assert quota_violations(cut, quota=None).episodes == 0
    # Alone and capped at the quota, a waits over [1, 5) with a fair share of 1 GPU.
    assert fairness(cut, capacity=4, quota=1.0).fair == {"a": pytest.approx(4.0)}


def test_waits_by_priority_count_a_job_never_started_until_the_end():
    waits = waits_by_priority(DAY, until=10)
    assert list(waits) == [0, -1]
    assert (waits[0].count, waits[0].p50, waits[0].max) == (3, 0, 2)
    assert (waits[-1].not_started, waits[-1].max) == (1, 5)


def test_the_workload_is_the_seeds():
    first, again = workload(7, 3), workload(7, 3)
    assert first == again and first != workload(8, 3)
    assert len({w.key for w in first}) == len(first) == sum(u.jobs for u in USERS)
    assert [w.arrival for w in first] == sorted(w.arrival for w in first)
    assert all(0 <= w.arrival <= 180 for w in first)
