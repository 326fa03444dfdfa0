"""The head of the queue's estimated starts (server/jobs/forecast.py), on plain values."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from server.jobs.forecast import (
    BEHIND_UNKNOWN,
    HELD_UNKNOWN,
    UNFIT,
    Ask,
    Estimate,
    Release,
    estimate_starts,
)

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
ALICE, BOB = 1, 2


def minutes(n: float) -> datetime:
    return NOW + timedelta(minutes=n)


def starts(asks, *, cpus=4.0, gpus=0.0, held=None, releases=(), quota=None) -> list[Estimate]:
    return estimate_starts(
        asks,
        now=NOW,
        free_cpus=cpus,
        free_gpus=gpus,
        held_gpus=held or {},
        releases=releases,
        gpu_quota=quota,
    )


def test_a_job_that_fits_starts_now_and_one_that_waits_starts_at_the_release_it_needs():
    releases = [Release(minutes(20), BOB, 1, 1), Release(minutes(10), ALICE, 1, 1)]
    asks = [Ask(ALICE, 1, 0), Ask(BOB, 1, 1), Ask(BOB, 1, 1)]
    assert starts(asks, releases=releases) == [
        Estimate(NOW),
        Estimate(minutes(10)),  # the earlier release, whatever order they came in
        Estimate(minutes(20)),
    ]


def test_the_queue_s_order_is_kept_a_job_never_starts_before_the_one_ahead():
    # The CPU job behind fits now, but the simulation does not overtake.
    asks = [Ask(ALICE, 1, 1), Ask(BOB, 1, 0)]
    assert starts(asks, releases=[Release(minutes(5), BOB, 1, 1)]) == [
        Estimate(minutes(5)),
        Estimate(minutes(5)),
    ]


def test_fractional_gpus_share_a_card():
    asks = [Ask(ALICE, 0.5, 0.25) for _ in range(4)] + [Ask(ALICE, 0.5, 0.25)]
    estimates = starts(asks, gpus=1.0, releases=[Release(minutes(3), BOB, 1, 0.1)])
    assert [e.start for e in estimates] == [NOW] * 4 + [None]
    assert estimates[-1].unknown_because == HELD_UNKNOWN  # 0.1 back is not 0.25


def test_without_a_known_release_the_job_and_everyone_behind_it_are_unknown():
    asks = [Ask(ALICE, 1, 1), Ask(BOB, 1, 0), Ask(BOB, 9, 0, fits_a_node=False)]
    assert starts(asks, gpus=0.0) == [
        Estimate(None, HELD_UNKNOWN),
        Estimate(None, BEHIND_UNKNOWN),
        Estimate(None, UNFIT),
    ]


def test_a_job_no_node_can_hold_never_starts_and_holds_nobody_up():
    asks = [Ask(ALICE, 64, 0, fits_a_node=False), Ask(BOB, 1, 0)]
    assert starts(asks) == [Estimate(None, UNFIT), Estimate(NOW)]


def test_the_owner_s_gpu_quota_waits_for_the_owner_s_own_release():
    # GPUs are free, but alice holds her quota's one GPU until minute 30;
    # bob's release at minute 10 does not help her.
    releases = [Release(minutes(10), BOB, 1, 1), Release(minutes(30), ALICE, 1, 1)]
    estimates = starts(
        [Ask(ALICE, 1, 1), Ask(BOB, 1, 1)],
        gpus=2.0,
        held={ALICE: 1.0, BOB: 1.0},
        releases=releases,
        quota=1.0,
    )
    assert estimates == [Estimate(minutes(30)), Estimate(minutes(30))]


def test_a_started_job_holds_its_request_for_good():
    # Nothing says when a job that has not run will end: the second waits in vain.
    assert starts([Ask(ALICE, 3, 0), Ask(BOB, 3, 0)]) == [
        Estimate(NOW),
        Estimate(None, HELD_UNKNOWN),
    ]
