"""bench/team_day_metrics.py on made-up days whose figures are known by hand."""

from __future__ import annotations

import pytest
import team_day_jobs
from team_day_jobs import (
    USERS,
    JobTimes,
    RunTimes,
    StandIn,
    Work,
    read_times,
    workload,
    write_run,
)
from team_day_metrics import (
    JobRecord,
    Preemptions,
    QuotaViolations,
    contended_seconds,
    fairness,
    jain,
    preemptions,
    priority_water_fill,
    quota_violations,
    segments,
    user_priorities,
    utilisation_while_waiting,
    waits_by_priority,
    water_fill,
)
from team_day_report import job_record


def job(user, gpus, submit, start, end, priority=0) -> JobRecord:
    """One run from ``start`` to ``end`` that finishes the job (None: never
    started, or still running at the end)."""
    runs = ((start, end),) if start is not None else ()
    return JobRecord(user, priority, gpus, submit, runs, finished=end is not None)


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


def test_utilisation_within_the_quota_leaves_out_waits_the_quota_holds_back():
    # Quota 1: over [2, 4) b waits while holding its 1 GPU, so nothing the
    # quota allows waits; [5, 8) and [8, 10) count (c holds nothing).
    cut = segments(DAY, until=10)
    assert utilisation_while_waiting(cut, capacity=2, quota=1) == pytest.approx((6 + 2) / (2 * 5))
    assert utilisation_while_waiting(cut, capacity=2, quota=2) == pytest.approx((4 + 6 + 2) / 14)
    # Quota 1.5: b, holding 1, waits for a whole GPU: past its quota all the same.
    assert utilisation_while_waiting(cut, capacity=2, quota=1.5) == pytest.approx(0.8)


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


# Capacity 2. c holds 1 GPU over [0, 14). a's job needs 10 s of work: its first
# run [0, 6) checkpoints 5 s and is preempted at 6 for b's job (submitted at 5,
# runs [6, 9)); a's job waits again over [6, 9) and its second run [9, 14) does
# the 5 s left.
PREEMPTED = [
    JobRecord("a", 0, 1.0, 0, ((0, 6), (9, 14)), finished=True, work=10),
    JobRecord("b", 0, 1.0, 5, ((6, 9),), finished=True, work=3),
    JobRecord("c", 0, 1.0, 0, ((0, 14),), finished=True, work=14),
]


def test_a_preempted_job_waits_between_its_runs():
    cut = segments(PREEMPTED, until=14)
    assert [(s.begin, s.end) for s in cut] == [(0, 5), (5, 6), (6, 9), (9, 14)]
    assert cut[1].held == {"a": 1.0, "c": 1.0} and cut[1].waiting == {"b": 1.0}
    assert cut[2].held == {"b": 1.0, "c": 1.0} and cut[2].waiting == {"a": 1.0}
    assert cut[3].held == {"a": 1.0, "c": 1.0} and cut[3].waiting == {}
    assert contended_seconds(cut) == 1 + 3
    assert utilisation_while_waiting(cut, capacity=2) == 1.0
    # [5, 6): demands a 1, b 1, c 1 of 2 -> 2/3 each, b waits holding 0;
    # [6, 9): the same demands, a waits holding 0.
    fair = fairness(cut, capacity=2, quota=None)
    assert fair.received == {"a": 0.0, "b": 0.0}
    assert fair.fair == pytest.approx({"a": 3 * 2 / 3, "b": 1 * 2 / 3})


def test_waits_count_to_the_first_start_and_the_waits_again_apart():
    waits = waits_by_priority(PREEMPTED, until=14)[0]
    assert (waits.count, waits.max) == (3, 1)  # b's 1 s; a's 3 s back in the queue not here
    assert (waits.preempted, waits.again_seconds, waits.again_max) == (1, 3, 3)


def test_gpu_seconds_lost_to_preemption():
    # a's runs held 6 + 5 GPU-seconds for 10 s of work: 1 lost (its first run's
    # last second after the checkpoint at 5). b and c were never preempted.
    assert preemptions(PREEMPTED) == Preemptions(runs=1, jobs=1, lost_gpu_seconds=1.0)
    day = [
        # Half a GPU, preempted twice (5 s then 10 s checkpointed), waiting at the end.
        JobRecord("x", 0, 0.5, 0, ((0, 7), (10, 20)), work=15),
        # Preempted before its first checkpoint; its second run still going at the
        # end, its work not counted yet.
        JobRecord("y", 1, 1.0, 0, ((0, 3), (5, None)), work=0),
        JobRecord("z", 0, 1.0, 0, ((0, 12),), finished=True, work=12),
    ]
    assert preemptions(day) == Preemptions(
        runs=3, jobs=2, lost_gpu_seconds=pytest.approx(0.5 * (17 - 15) + 1.0 * 3)
    )
    assert day[0].held(25) == 17 and day[1].held(25) == 3 + 20
    assert day[0].state(22) == "waiting" and day[1].state(22) == "held"
    waits = waits_by_priority(day, until=25)
    # x waits again 7 -> 10 and 20 -> 25; y 3 -> 5.
    assert (waits[0].preempted, waits[0].again_seconds, waits[0].again_max) == (1, 8, 8)
    assert (waits[1].preempted, waits[1].again_seconds) == (1, 2)
    assert preemptions(DAY) == Preemptions(0, 0, 0.0)


def test_priority_water_fill_serves_the_higher_classes_first():
    priority = {"a": 2, "b": 0, "c": 0}
    # a alone in class 2 gets its 2; b and c share the 2 left: b wants 1, c the rest.
    assert priority_water_fill({"a": 2, "b": 1, "c": 3}, priority, 4) == {
        "a": 2,
        "b": 1,
        "c": 1,
    }
    # Class 2 wants more than there is: nothing is left for class 0.
    assert priority_water_fill({"a": 5, "b": 1}, priority, 4) == {"a": 4, "b": 0}
    assert user_priorities(DAY) == {"a": 0, "b": 0, "c": -1}


def test_fairness_by_priority_does_not_count_priorities_against_the_index():
    # Capacity 2. hi (priority 1) runs two 1-GPU jobs over [0, 10) and waits for
    # a third; lo (priority 0) waits for one over [0, 10). Both run over [10, 15).
    day = [
        job("hi", 1.0, 0, 0, 10, priority=1),
        job("hi", 1.0, 0, 0, 10, priority=1),
        job("hi", 1.0, 0, 10, 15, priority=1),
        job("lo", 1.0, 0, 10, 15),
    ]
    cut = segments(day, until=15)
    # Equal shares over [0, 10): hi 1, lo 1; hi held 2, lo 0 -> x = 2 and 0.
    equal = fairness(cut, capacity=2, quota=None)
    assert (equal.ratio("hi"), equal.ratio("lo"), equal.jain) == (2.0, 0.0, 0.5)
    # By priority: hi's 3 come first and take both GPUs; lo's share is 0, so lo
    # has no x and the index is over hi alone, which got its share.
    ranked = fairness(cut, capacity=2, quota=None, priority=user_priorities(day))
    assert ranked.fair == {"hi": 20.0, "lo": 0.0}
    assert (ranked.ratio("hi"), ranked.ratio("lo"), ranked.jain) == (1.0, None, 1.0)
    # On DAY: b's share is as with equal shares (a and b are both priority 0);
    # c (priority -1) gets only what a and b leave: 0 over [5, 8), 1 over [8, 10).
    by_class = fairness(segments(DAY, until=10), 2, None, user_priorities(DAY))
    assert by_class.fair == pytest.approx({"b": 2.0, "c": 2.0})


def work(key=1, gpus=1.0) -> Work:
    return Work(key, "a", 0, gpus, 10.0, 0.0)


def run(start, end, work, done=False, attempt=None) -> RunTimes:
    return RunTimes(start, end, work, done, attempt)


def test_job_records_from_the_stand_ins_runs():
    # The mode began at 100 on the wall clock and stopped at 30 s.
    finished = JobTimes((run(100, 107, 5), run(110, 115.1, 5, done=True)))
    assert job_record(work(), finished, 100, 0.5, 30) == JobRecord(
        "a", 0, 1.0, 0.5, ((0, 7), (10, pytest.approx(15.1))), finished=True, work=10
    )
    # Its last beat a moment before the stop: running then, not preempted.
    running = JobTimes((run(100, 107, 5), run(110, 129.9, 15)))
    record = job_record(work(), running, 100, 0.5, 30)
    assert (record.runs, record.work, record.preempted) == (((0, 7), (10, None)), 5, 1)
    waiting = job_record(work(), JobTimes((run(100, 107, 5),)), 100, 0.5, 30)
    assert (waiting.runs, waiting.finished, waiting.state(29)) == (((0, 7),), False, "waiting")
    # Finished after the stop, or started after it.
    late = job_record(work(), JobTimes((run(100, 135, 10, done=True),)), 100, 0.5, 30)
    assert (late.runs, late.finished, late.work) == (((0, None),), False, 0)
    after = JobTimes((run(100, 107, 5), run(131, 136, 5, done=True)))
    assert job_record(work(), after, 100, 0.5, 30).runs == ((0, 7),)
    assert job_record(work(), None, 100, 0.5, 30).runs == ()


def test_the_stand_ins_file_keeps_every_run(tmp_path):
    first = {"start": 1.0, "end": 2.0, "work": 0.0, "done": False, "attempt": 1}
    write_run(tmp_path, 7, "one", first)
    second = {"start": 3.0, "end": 9.0, "work": 10.0, "done": True, "attempt": None}
    write_run(tmp_path, 7, "two", second)
    write_run(tmp_path, 7, "one", {**first, "end": 2.25, "work": 5.0})  # a late beat
    times = read_times(tmp_path, 7)
    assert times == JobTimes((run(1.0, 2.25, 5.0, attempt=1), run(3.0, 9.0, 10.0, done=True)))
    assert (times.work, times.done) == (15.0, True)
    assert read_times(tmp_path, 8) is None


def test_a_stand_in_checkpoints_as_it_works_and_a_later_run_resumes(tmp_path, monkeypatch):
    monkeypatch.setattr(team_day_jobs, "CHECKPOINT_SECONDS", 0.2)
    monkeypatch.setattr(team_day_jobs, "HEARTBEAT_SECONDS", 0.02)
    monkeypatch.setattr(team_day_jobs.ray.actor, "exit_actor", lambda: None)
    # A killed run checkpointed 10 s of the job's 10.5: the next holds for 0.5 s.
    killed = {"start": 1.0, "end": 12.0, "work": 10.0, "done": False, "attempt": 1}
    write_run(tmp_path, 3, "killed", killed)
    written = []
    monkeypatch.setattr(
        team_day_jobs, "write_run", lambda *a: (written.append(a[3]), write_run(*a))
    )
    again = StandIn(str(tmp_path), 3, attempt=2)
    assert again.resumed == 10.0
    again.run(10.5)
    works = [entry["work"] for entry in written]
    assert works[0] == 0 and works[-1] == 0.5 and written[-1]["done"]
    # Credited every 0.2 s of work (0.4 too, unless no beat fell in its last 0.1 s).
    assert {0, 0.2} <= set(works[:-1]) <= {0, 0.2, 0.4}
    assert len(written) > 10  # the heartbeat, every 0.02 s
    last = read_times(tmp_path, 3)
    assert last is not None and last.done and last.work == 10.5
    assert last.runs[1].attempt == 2
    assert last.runs[1].end - last.runs[1].start == pytest.approx(0.5, abs=0.1)
