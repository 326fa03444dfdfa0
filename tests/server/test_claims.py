"""Dispatchers claiming queued jobs: queue order, atomicity, and real races."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import sessionmaker

from server.db.models import Job, JobAttempt, User, utcnow
from server.db.session import make_engine, make_session_factory
from server.jobs.attempts import attempt_for_token
from server.jobs.claims import claim_next
from server.jobs.views import job_view

# Where a claimed attempt would report; nothing runs it here.
ADDRESS = {"api_url": "http://127.0.0.1:9", "artifact_root": "/nonexistent"}


@pytest.fixture
def db(database_url) -> Iterator[sessionmaker]:
    engine = make_engine(database_url)
    yield make_session_factory(engine)
    engine.dispose()


def add_jobs(db: sessionmaker, owner: str, priorities: list[int]) -> list[int]:
    """Queue one job per priority, each a millisecond older than the next."""
    start = utcnow()
    with db.begin() as session:
        user = session.scalar(select(User).where(User.name == owner))
        if user is None:
            user = User(name=owner)
            session.add(user)
            session.flush()
        jobs = [
            Job(
                owner_id=user.id,
                spec={"n": n},
                spec_hash=str(n),
                status="queued",
                priority=priority,
                created_at=start + timedelta(milliseconds=n),
            )
            for n, priority in enumerate(priorities)
        ]
        session.add_all(jobs)
        session.flush()
        return [job.id for job in jobs]


def claim(db: sessionmaker, *conditions) -> int | None:
    with db.begin() as session:
        claimed = claim_next(session, *conditions, **ADDRESS)
        return None if claimed is None else claimed.job_id


def test_claims_follow_the_queue_order_that_the_job_view_reports(db):
    ids = add_jobs(db, "alice", [0, 5, 0, 5, -1])
    with db() as session:
        # The API shows a queued job's place as the jobs ahead of it, plus one.
        positions = {job_id: job_view(session, job_id).ahead for job_id in ids}
    claimed = [claim(db) for _ in ids]
    assert claimed == [ids[1], ids[3], ids[0], ids[2], ids[4]]
    assert claimed == sorted(ids, key=positions.__getitem__)
    assert claim(db) is None


def test_a_claim_starts_the_attempt_with_a_token_in_one_transaction(db):
    (job_id,) = add_jobs(db, "alice", [0])
    with db.begin() as session:
        session.get(Job, job_id).queue_reason = "no free GPU"
    with db() as session:
        claimed = claim_next(session, **ADDRESS)
        assert claimed is not None
        assert (claimed.job_id, claimed.attempt, claimed.spec) == (job_id, 1, {"n": 0})
        session.rollback()  # the dispatcher died before committing: nothing happened
    with db() as session:
        job = session.get(Job, job_id)
        assert (job.status, job.attempt, job.queue_reason) == ("queued", 0, "no free GPU")
        assert session.scalar(select(func.count()).select_from(JobAttempt)) == 0
    with db.begin() as session:
        claimed = claim_next(session, **ADDRESS)
    with db() as session:
        job = session.get(Job, job_id)
        assert (job.status, job.attempt, job.queue_reason) == ("running", 1, None)
        assert session.scalar(select(JobAttempt.number)) == claimed.attempt == 1
        assert attempt_for_token(session, claimed.token).job_id == job_id


def test_conditions_narrow_what_may_be_claimed(db):
    alice_jobs = add_jobs(db, "alice", [9, 9])
    bob_jobs = add_jobs(db, "bob", [0])
    with db() as session:
        alice_id = session.scalar(select(User.id).where(User.name == "alice"))
    assert claim(db, Job.owner_id != alice_id) == bob_jobs[0]
    assert claim(db, Job.owner_id != alice_id) is None
    assert claim(db) == alice_jobs[0]


def test_racing_claimers_never_share_a_job(db):
    """Four claimers in threads with their own connections empty one queue.

    Each holds its transaction open a moment after claiming, so the others
    really meet locked rows. Every job must be claimed exactly once.
    """
    ids = add_jobs(db, "alice", [n % 3 for n in range(60)])
    claimers = 4
    barrier = threading.Barrier(claimers)
    claimed: list[list[int]] = [[] for _ in range(claimers)]
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            barrier.wait()
            while True:
                with db.begin() as session:
                    got = claim_next(session, **ADDRESS)
                    if got is None:
                        return
                    time.sleep(0.005)
                claimed[index].append(got.job_id)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(claimers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    everything = [job_id for part in claimed for job_id in part]
    assert Counter(everything) == Counter(ids)  # each job exactly once
    with db() as session:
        statuses = Counter(session.scalars(select(Job.status)))
        attempts = session.execute(
            select(JobAttempt.job_id, func.count()).group_by(JobAttempt.job_id)
        ).all()
    assert statuses == {"running": len(ids)}
    assert {count for _, count in attempts} == {1}


# Row locks are PostgreSQL's; on SQLite claimers queue on the write lock instead.
@pytest.mark.parametrize("empty_database_url", ["postgresql"], indirect=True)
def test_postgres_claimer_skips_a_job_being_claimed_instead_of_waiting(db):
    first, second = add_jobs(db, "alice", [0, 0])
    holder = db()
    try:
        held = claim_next(holder, **ADDRESS)  # not committed: the first job's row stays locked
        assert held is not None and held.job_id == first
        with db.begin() as session:
            # Waiting on the lock would hit this timeout and raise instead of skipping.
            session.execute(text("SET LOCAL lock_timeout = '2s'"))
            other = claim_next(session, **ADDRESS)
            assert other is not None and other.job_id == second
            session.execute(text("SET LOCAL lock_timeout = '2s'"))
            assert claim_next(session, **ADDRESS) is None  # the held job is skipped, not waited on
        holder.commit()
    finally:
        holder.close()
    with db() as session:
        assert Counter(session.scalars(select(Job.status))) == {"running": 2}


def test_a_claim_starts_the_next_attempt_and_supersedes_the_open_one(db):
    """A job queued again with its first attempt still open (a worker thought
    lost): the claim makes attempt 2 live with the order's token, ends attempt 1
    as superseded, keeps the first start, clears the queue reason, and tells
    this process's answers that the job and the queue changed."""
    from server.changes.book import ChangeBook, job_key
    from server.changes.tracking import register, unregister
    from server.jobs.claims import claim_job

    [job_id] = add_jobs(db, "alice", [0])
    first_start = utcnow() - timedelta(hours=1)
    with db.begin() as session:
        job = session.get_one(Job, job_id)
        job.attempt, job.started_at, job.queue_reason = 1, first_start, "waiting for 1 GPU"
        session.add(
            JobAttempt(job_id=job_id, number=1, token_hash="0" * 64, started_at=first_start)
        )
    book = ChangeBook(trusted=True)
    register(book)
    try:
        before = book.now()
        with db.begin() as session:
            order = claim_job(session, job_id, **ADDRESS)
        assert order is not None and order.attempt == 2 and order.spec == {"n": 0}
        assert not book.current((job_key(job_id),), before)
    finally:
        unregister(book)
    with db() as session:
        job = session.get_one(Job, job_id)
        assert (job.status, job.attempt, job.queue_reason) == ("running", 2, None)
        assert job.started_at == first_start
        attempts = session.scalars(select(JobAttempt).order_by(JobAttempt.number)).all()
        assert [(a.number, a.status, a.ended_at is None) for a in attempts] == [
            (1, "superseded", False),
            (2, "running", True),
        ]
        live = attempt_for_token(session, order.token)
        assert live is not None and (live.job_id, live.number) == (job_id, 2)

    with db.begin() as session:
        assert claim_job(session, job_id, **ADDRESS) is None
