"""The queue policy: priority with aging, fair share between owners, age; claim_job."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, text

from server.db.models import Job, User
from server.db.session import make_engine, make_session_factory
from server.jobs.claims import claim_job
from server.scheduling import Candidate, Usage, gpu_seconds, next_job

# Where a claimed attempt would report; nothing runs it here.
ADDRESS = {"api_url": "http://127.0.0.1:9", "artifact_root": "/nonexistent"}
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def job(job_id: int, owner: int, *, priority: int = 0, age_s: float = 0, gpus: float = 1):
    return Candidate(job_id, owner, priority, NOW - timedelta(seconds=age_s), 1.0, gpus, None)


def order(candidates, used=None, running=None, aging=3600.0) -> list[int]:
    """The ids in the order a dispatcher with room for all would claim them."""
    used, running, left, picked = Counter(used), Counter(running), list(candidates), []
    while choice := next_job(left, used=used, running=running, now=NOW, aging_seconds=aging):
        picked.append(choice.job_id)
        left.remove(choice)
        running[choice.owner_id] += 1
    return picked


def test_priority_goes_first_then_age():
    assert order([job(1, 1, age_s=50), job(2, 1, priority=5), job(3, 1, age_s=100)]) == [2, 3, 1]


def test_the_owner_who_used_the_cluster_least_goes_first():
    jobs = [job(1, owner=1, age_s=30), job(2, owner=2, age_s=10)]
    assert order(jobs, used={1: 7200.0, 2: 60.0}) == [2, 1]
    assert order(jobs, used={1: 0.0, 2: 60.0}) == [1, 2]


def test_owners_take_turns_when_their_usage_is_equal():
    alice = [job(n, owner=1, age_s=100 - n) for n in range(1, 4)]
    bob = [job(n, owner=2, age_s=50 - n) for n in range(11, 13)]
    assert order(alice + bob) == [1, 11, 2, 12, 3]


def test_a_waiting_low_priority_job_is_not_starved():
    old_low = job(1, owner=1, priority=0, age_s=3 * 3600 + 1)
    fresh_high = [job(n, owner=2, priority=2) for n in range(10, 13)]
    # Three hours of waiting lift priority 0 to 3, above the new priority-2 jobs.
    assert order([old_low, *fresh_high], aging=3600.0)[0] == 1
    assert order([old_low, *fresh_high], aging=5 * 3600.0)[-1] == 1


def test_fair_share_decides_within_a_class_however_long_its_jobs_waited():
    """A burst that has waited four aging steps does not outrank a newer job of
    its class from an owner who used the cluster less: aging lifts the class."""
    burst = [job(n, owner=1, age_s=120 + n) for n in range(1, 4)]
    newcomer = job(10, owner=2, age_s=1)
    assert order([*burst, newcomer], used={1: 3000.0, 2: 0.0}, aging=30.0)[0] == 10
    # Lifted, the class meets a higher one and fair share decides between them:
    # priority 0, waiting 121 s at 30 s a step, reaches 4, as a new priority-4 job.
    urgent = job(20, owner=3, priority=4)
    picked = order([newcomer, *burst, urgent], used={1: 3000.0, 2: 0.0, 3: 60.0}, aging=30.0)
    assert picked[:2] == [10, 20]
    assert order([newcomer, *burst, urgent], used={1: 3000.0, 2: 60.0, 3: 0.0}, aging=30.0)[0] == 20


def test_gpu_seconds_count_only_the_window_and_running_attempts_up_to_now():
    usage = [
        Usage(1, 2.0, NOW - timedelta(hours=30), NOW - timedelta(hours=25)),  # outside
        Usage(1, 2.0, NOW - timedelta(hours=25), NOW - timedelta(hours=23)),  # 1 h inside
        Usage(2, 0.5, NOW - timedelta(minutes=10), None),  # running
        Usage(3, 0.0, NOW - timedelta(hours=1), None),  # CPU only
    ]
    totals = gpu_seconds(usage, NOW, window_seconds=24 * 3600)
    assert totals == {1: 2.0 * 3600, 2: 0.5 * 600}


@pytest.fixture
def db(database_url):
    engine = make_engine(database_url)
    yield make_session_factory(engine)
    engine.dispose()


def test_claim_job_takes_only_a_queued_job(db):
    with db.begin() as session:
        user = User(name="carol")
        session.add(user)
        session.flush()
        jobs = [Job(owner_id=user.id, spec={}, spec_hash="h", status=s) for s in ("queued",) * 2]
        session.add_all(jobs)
        session.flush()
        first, second = (j.id for j in jobs)
    with db.begin() as session:
        assert claim_job(session, first, **ADDRESS).attempt == 1
    with db.begin() as session:
        assert claim_job(session, first, **ADDRESS) is None  # running now
        assert claim_job(session, 999, **ADDRESS) is None
    with db() as session:
        assert session.scalar(select(Job.status).where(Job.id == second)) == "queued"


@pytest.mark.parametrize("empty_database_url", ["postgresql"], indirect=True)
def test_claim_job_skips_a_job_another_dispatcher_is_claiming(db):
    with db.begin() as session:
        user = User(name="dave")
        session.add(user)
        session.flush()
        queued = Job(owner_id=user.id, spec={}, spec_hash="h", status="queued")
        session.add(queued)
        session.flush()
        job_id = queued.id
    holder = db()
    try:
        assert claim_job(holder, job_id, **ADDRESS) is not None  # uncommitted: the row stays locked
        with db.begin() as session:
            session.execute(text("SET LOCAL lock_timeout = '2s'"))
            assert claim_job(session, job_id, **ADDRESS) is None  # skipped, not waited on
        holder.commit()
    finally:
        holder.close()
