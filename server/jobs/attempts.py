"""Attempts: a job's runs on workers, from start to end, and their tokens.

An attempt starts when the dispatcher claims a queued job (start_attempt); its
plain token, shown once, is good for that attempt's reports only and dies when
the attempt ends, is superseded by the next, or is lost with its worker. What
the attempt reports is applied by server.jobs.reports.

Every change to a job happens with the job row locked (``SELECT ... FOR UPDATE``
on PostgreSQL; on SQLite a no-op write takes the database's single write lock
first, so the reads that follow cannot go stale).

Nothing here commits: the caller owns the transaction.
"""

from __future__ import annotations

from typing import cast

from sqlalchemy import Table, func, select, update
from sqlalchemy.orm import Session

from server.auth.tokens import ATTEMPT_TOKEN_PREFIX, hash_token, new_token
from server.db.models import Job, JobAttempt, utcnow
from server.jobs.states import transition
from silo_contract.status import AttemptStatus, JobStatus

LIVE = AttemptStatus.RUNNING.value


class JobNotFoundError(LookupError):
    """The job does not exist."""


class AttemptSupersededError(Exception):
    """The attempt is not the job's live attempt any more; its reports are refused."""


def take_sqlite_write_lock(session: Session) -> None:
    """On SQLite, take the database's write lock now (a no-op elsewhere).

    SQLite has no row locks: a transaction that reads and then writes can fail
    when it upgrades a stale read. A write statement first (one that matches no
    row is enough) makes concurrent writers queue on the busy timeout instead.
    """
    if session.get_bind().dialect.name == "sqlite":
        jobs = cast(Table, Job.__table__)  # a mapped class's table is a Table
        session.execute(update(jobs).where(jobs.c.id == -1).values(event_seq=jobs.c.event_seq))


def lock_job(session: Session, job_id: int) -> Job:
    """Load the job with its row locked for the rest of the transaction."""
    take_sqlite_write_lock(session)
    job = session.scalar(
        select(Job)
        .where(Job.id == job_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if job is None:
        raise JobNotFoundError(f"job {job_id} does not exist")
    return job


def reload_attempt(session: Session, attempt: JobAttempt) -> JobAttempt:
    """The attempt's row as committed now (read after the job lock is held)."""
    fresh = session.scalar(
        select(JobAttempt)
        .where(JobAttempt.id == attempt.id)
        .execution_options(populate_existing=True)
    )
    assert fresh is not None  # attempts are deleted only with their job
    return fresh


def is_live(job: Job, attempt: JobAttempt) -> bool:
    """Whether ``attempt`` may still report for ``job``."""
    return (
        attempt.status == LIVE
        and attempt.ended_at is None
        and attempt.number == job.attempt
        and not JobStatus(job.status).is_terminal
    )


def require_live(session: Session, attempt: JobAttempt) -> tuple[Job, JobAttempt]:
    """The attempt's job, locked, and the attempt as committed now;
    AttemptSupersededError unless it may still report."""
    job = lock_job(session, attempt.job_id)
    attempt = reload_attempt(session, attempt)
    if not is_live(job, attempt):
        raise AttemptSupersededError(
            f"attempt {attempt.number} of job {job.id} is no longer the job's live attempt"
        )
    return job, attempt


def attempt_for_token(session: Session, token: str) -> JobAttempt | None:
    """The attempt a plain attempt token belongs to, else None."""
    return session.scalar(select(JobAttempt).where(JobAttempt.token_hash == hash_token(token)))


def start_attempt(session: Session, job_id: int) -> tuple[int, str]:
    """Start a queued job's next attempt; return its number and its plain token.

    Every earlier attempt still open is marked superseded, so its token stops
    working at once.
    """
    job = lock_job(session, job_id)
    job.status = transition(job.status, JobStatus.RUNNING)
    now = utcnow()
    job.attempt += 1
    if job.started_at is None:
        job.started_at = now
    session.execute(
        update(JobAttempt)
        .where(
            JobAttempt.job_id == job_id,
            JobAttempt.number < job.attempt,
            JobAttempt.ended_at.is_(None),
        )
        .values(status=AttemptStatus.SUPERSEDED.value, ended_at=now)
        .execution_options(synchronize_session="fetch")
    )
    token = new_token(ATTEMPT_TOKEN_PREFIX)
    session.add(
        JobAttempt(
            job_id=job_id,
            number=job.attempt,
            token_hash=hash_token(token),
            status=LIVE,
            started_at=now,
        )
    )
    session.flush()
    return job.attempt, token


def end_attempt(session: Session, job_id: int, number: int, status: str) -> bool:
    """Close an attempt (its token dies); False if it was already closed."""
    lock_job(session, job_id)
    attempt = session.scalar(
        select(JobAttempt)
        .where(JobAttempt.job_id == job_id, JobAttempt.number == number)
        .execution_options(populate_existing=True)
    )
    if attempt is None or attempt.ended_at is not None:
        return False
    attempt.status = status
    attempt.ended_at = utcnow()
    session.flush()
    return True


def settle_lost_attempt(
    session: Session, job_id: int, number: int, *, max_attempts: int, reason: str
) -> JobStatus | None:
    """The attempt's worker is gone without finishing: decide what becomes of the job.

    A cancelling job ends cancelled; otherwise it is queued again (the next
    attempt resumes from the checkpoint) until ``max_attempts`` attempts have
    been made, then it fails with ``reason``. Returns the job's new status, or
    None when the attempt was no longer the job's live one (nothing to do).
    """
    job = lock_job(session, job_id)
    if job.attempt != number or JobStatus(job.status) not in (
        JobStatus.RUNNING,
        JobStatus.CANCELLING,
    ):
        return None
    end_attempt(session, job_id, number, AttemptStatus.LOST)
    job.progress_note = None  # the lost worker's; the next attempt reports its own
    now = utcnow()
    if job.status == JobStatus.CANCELLING:
        job.status = transition(job.status, JobStatus.CANCELLED)
        job.finished_at = now
    elif job.attempt - _preempted(session, job_id) < max_attempts:
        job.status = transition(job.status, JobStatus.QUEUED)
        job.queue_reason = f"attempt {number} lost ({reason}); it will resume from its checkpoint"
    else:
        job.status = transition(job.status, JobStatus.FAILED)
        job.finished_at = now
        job.error_message = f"attempt {number} of {max_attempts} lost ({reason}); no retries left"
    session.flush()
    return JobStatus(job.status)


def _preempted(session: Session, job_id: int) -> int:
    """How many of the job's attempts were preempted: they count against no limit."""
    return (
        session.scalar(
            select(func.count())
            .select_from(JobAttempt)
            .where(
                JobAttempt.job_id == job_id,
                JobAttempt.status == AttemptStatus.PREEMPTED.value,
            )
        )
        or 0
    )


def preempt_attempt(session: Session, job_id: int, number: int, *, reason: str) -> bool:
    """The dispatcher stopped the running attempt to free its GPUs: the job is
    queued again, and its next attempt resumes from the checkpoint. A preempted
    attempt is not counted against ``max_attempts``. False when the attempt was
    no longer the job's running one (it ended, or is being cancelled)."""
    job = lock_job(session, job_id)
    if job.attempt != number or job.status != JobStatus.RUNNING:
        return False
    end_attempt(session, job_id, number, AttemptStatus.PREEMPTED)
    job.progress_note = None
    job.status = transition(job.status, JobStatus.QUEUED)
    job.queue_reason = f"attempt {number} preempted ({reason}); it will resume from its checkpoint"
    session.flush()
    return True


def finish_cancel(session: Session, job_id: int, number: int) -> bool:
    """A cancelling job whose worker was killed after the grace period ends cancelled."""
    job = lock_job(session, job_id)
    if job.attempt != number or job.status != JobStatus.CANCELLING:
        return False
    end_attempt(session, job_id, number, AttemptStatus.KILLED)
    job.status = transition(job.status, JobStatus.CANCELLED)
    job.finished_at = utcnow()
    session.flush()
    return True
