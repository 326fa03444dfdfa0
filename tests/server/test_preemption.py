"""Fair-share preemption: which running jobs a waiting one may take GPUs from
(server/preemption.py), and what stopping one does to its job and attempt."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from server.db.models import Job, JobAttempt, User
from server.jobs.attempts import preempt_attempt, settle_lost_attempt
from server.jobs.claims import claim_job
from server.preemption import RunningJob, victims
from server.scheduling import Candidate, LaunchOrder

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
ADDRESS = {"api_url": "http://127.0.0.1:9", "artifact_root": "/nonexistent"}
CARDS = 4.0  # one node, four whole cards; the tests' jobs take whole GPUs


def waiting(owner: int = 1, *, gpus: float = 1.0, priority: int = 0) -> Candidate:
    return Candidate(100, owner, priority, NOW - timedelta(seconds=5), 1.0, gpus, None)


def running(
    job_id: int, owner: int, *, gpus: float = 1.0, ran_s: float = 60, priority: int = 0
) -> RunningJob:
    started = NOW - timedelta(seconds=ran_s)
    return RunningJob(
        (job_id, 1), owner, priority, gpus, started - timedelta(seconds=1), started, False
    )


def held_by(jobs: Sequence[RunningJob]) -> dict[int, float]:
    held: dict[int, float] = {}
    for job in jobs:
        held[job.owner_id] = held.get(job.owner_id, 0.0) + job.gpus
    return held


def choose(
    want: Candidate,
    jobs: list[RunningJob],
    *,
    min_runtime: float = 30,
    used: dict[int, float] | None = None,
) -> list[int]:
    """The ids of the jobs stopped for ``want`` on one node of CARDS whole GPUs,
    all of them held by ``jobs`` (a whole-GPU model: stopping g GPUs frees g).
    ``used``: GPU-seconds per owner, by default what the running jobs used."""
    if used is None:
        used = {}
        for job in jobs:
            ran = (NOW - job.started_at).total_seconds()
            used[job.owner_id] = used.get(job.owner_id, 0.0) + job.gpus * ran
    order = LaunchOrder([want], used=used, running={}, now=NOW, aging_seconds=3600)

    def fits_without(stopped: Sequence[RunningJob]) -> bool:
        in_use = sum(job.gpus for job in jobs) - sum(job.gpus for job in stopped)
        return want.gpus <= CARDS - in_use

    chosen = victims(
        want,
        jobs,
        held=held_by(jobs),
        now=NOW,
        min_runtime_seconds=min_runtime,
        ranks_before=order.ranks_before,
        fits_without=fits_without,
    )
    return [job.key[0] for job in chosen]


def test_the_owner_holding_most_gives_up_its_newest_job():
    # carol holds 3 GPUs, bob 1; alice (owner 1) waits with none.
    jobs = [running(1, 3, ran_s=300), running(2, 3, ran_s=100), running(3, 3, ran_s=200)]
    jobs.append(running(4, 2, ran_s=50))
    assert choose(waiting(), jobs) == [2]


def test_gpus_move_only_from_an_owner_that_keeps_at_least_what_the_waiting_one_gets():
    # Owners 2 and 3 hold two cards each, alice (owner 1) none: with one taken
    # from either, both hold 1 GPU: allowed.
    assert len(choose(waiting(), [running(1, 2), running(2, 2), running(3, 3), running(4, 3)])) == 1
    # Alice holds one card herself: she would hold 2, owner 2 only 1. No.
    mine = [running(1, 2), running(2, 2), running(3, 3), running(4, 1)]
    assert choose(waiting(), mine) == []
    # Owner 2 holds three: it keeps 2, as many as alice would have. Allowed.
    more = [running(1, 2), running(2, 2), running(3, 2), running(4, 1)]
    assert len(choose(waiting(), more)) == 1


def test_jobs_younger_than_the_minimum_run_time_are_spared():
    jobs = [running(1, 2, ran_s=10), running(2, 2, ran_s=20), running(3, 3), running(4, 3)]
    assert choose(waiting(), jobs, min_runtime=30) in ([3], [4])
    young = [running(n, 2, ran_s=10) for n in range(1, 5)]
    assert choose(waiting(), young, min_runtime=30) == []


def test_a_higher_priority_job_is_never_preempted_for_a_lower_one():
    jobs = [running(n, 2, priority=1) for n in range(1, 5)]
    assert choose(waiting(priority=0), jobs) == []
    assert len(choose(waiting(priority=1), jobs)) == 1
    assert len(choose(waiting(priority=2), jobs)) == 1


def test_no_job_is_stopped_for_one_that_would_not_go_before_it_when_requeued():
    # Owner 2 holds all four cards but has used far fewer GPU-seconds than alice:
    # queued again, its job would win the freed card back.
    jobs = [running(n, 2) for n in range(1, 5)]
    assert choose(waiting(), jobs, used={1: 10_000.0, 2: 100.0}) == []
    assert len(choose(waiting(), jobs, used={1: 100.0, 2: 10_000.0})) == 1


def test_just_enough_is_stopped_for_a_job_needing_more_than_one_victim():
    halves = [running(n, 2, gpus=0.5, ran_s=100 + n) for n in range(1, 7)]
    jobs = [*halves, running(7, 3)]  # owner 2 holds 3 GPUs in halves, owner 3 one
    stopped = choose(waiting(gpus=1.0), jobs)
    assert stopped == [1, 2]  # the newest two halves; owner 2 keeps 2 GPUs
    # Nothing fits without stopping more than fairness allows: nothing is stopped.
    assert choose(waiting(gpus=2.0), jobs) == []


def test_cancelling_jobs_and_the_waiting_owners_own_jobs_are_not_victims():
    jobs = [running(n, 1) for n in range(1, 4)]  # alice's own
    cancelling = RunningJob((9, 1), 2, 0, 1.0, NOW, NOW - timedelta(hours=1), True)
    assert choose(waiting(owner=1), [*jobs, cancelling]) == []


# --- the job and its attempt --------------------------------------------------


def running_job(sessions) -> int:
    with sessions.begin() as session:
        owner = User(name="carol")
        session.add(owner)
        session.flush()
        job = Job(owner_id=owner.id, spec={}, spec_hash="h")
        session.add(job)
        session.flush()
        job_id = job.id
    with sessions.begin() as session:
        assert claim_job(session, job_id, **ADDRESS) is not None
    return job_id


def test_a_preempted_job_is_queued_again_and_its_attempt_counts_against_no_limit(sessions):
    job_id = running_job(sessions)
    # Preempted four times with max_attempts 2: it is still queued, not failed.
    for number in range(1, 5):
        with sessions.begin() as session:
            assert preempt_attempt(session, job_id, number, reason="for job 7")
        with sessions.begin() as session:
            job = session.get(Job, job_id)
            assert (job.status, job.attempt) == ("queued", number)
            assert job.queue_reason == (
                f"attempt {number} preempted (for job 7); it will resume from its checkpoint"
            )
            assert claim_job(session, job_id, **ADDRESS).attempt == number + 1
    with sessions() as session:
        attempts = session.scalars(
            select(JobAttempt.status).where(JobAttempt.job_id == job_id).order_by("number")
        ).all()
    assert attempts == ["preempted"] * 4 + ["running"]
    # A lost attempt still counts: the first of the two allowed, queued again;
    with sessions.begin() as session:
        lost = settle_lost_attempt(session, job_id, 5, max_attempts=2, reason="node down")
    assert lost == "queued"
    with sessions.begin() as session:
        assert claim_job(session, job_id, **ADDRESS).attempt == 6
        assert settle_lost_attempt(session, job_id, 6, max_attempts=2, reason="x") == "failed"


def test_only_the_running_attempt_is_preempted(sessions):
    job_id = running_job(sessions)
    with sessions.begin() as session:
        assert not preempt_attempt(session, job_id, 2, reason="stale")  # not its attempt
        session.get(Job, job_id).status = "cancelling"
    with sessions.begin() as session:
        assert not preempt_attempt(session, job_id, 1, reason="cancelling already")
        assert session.get(Job, job_id).status == "cancelling"
