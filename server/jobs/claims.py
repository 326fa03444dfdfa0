"""Claiming queued jobs: how a dispatcher takes work without racing another.

Several dispatchers (one per API replica, or standalone) may scan the same
queue. On PostgreSQL the claim reads the first queued job with
``FOR UPDATE SKIP LOCKED``: a job another claimer is taking is passed over
instead of waited on, so two claimers never get the same job and never block
each other. SQLite has one writer at a time, so there the claim takes the
write lock first and claimers simply queue behind it.

The claim and the attempt it starts are one transaction: when it commits the
job is ``running`` with a fresh attempt token, or nothing happened. On
PostgreSQL a claim is one statement (the job locked and started, earlier
attempts superseded, the new one inserted, the NOTIFY sent): a launching
dispatcher tick was mostly claims at eleven round trips each
(bench/dispatch_tick.py). SQLite, which has no writing CTEs, claims through
the ORM (server/jobs/attempts.start_attempt) under its write lock.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Select, bindparam, func, insert, literal, select, update
from sqlalchemy.orm import Session

from server.auth.tokens import ATTEMPT_TOKEN_PREFIX, hash_token, new_token
from server.changes.book import new_job_keys
from server.changes.tracking import announce, notify_new_job
from server.db.models import Job, JobAttempt, UtcDateTime, utcnow
from server.jobs.attempts import LIVE, start_attempt, take_sqlite_write_lock
from server.jobs.views import QUEUE_ORDER
from silo_contract.order import AttemptOrder
from silo_contract.status import AttemptStatus, JobStatus


def claim_next(
    session: Session, *conditions: ColumnElement[bool], api_url: str, artifact_root: str
) -> AttemptOrder | None:
    """Claim the first queued job (in queue order) that nobody else is claiming.

    ``conditions`` narrow the candidates (for example owners under their quota).
    Starts the job's next attempt and returns it, or None when no queued job
    matches. The caller commits.
    """
    first = (
        select(Job.id)
        .where(Job.status == JobStatus.QUEUED.value, *conditions)
        .order_by(*QUEUE_ORDER)
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    return _claim(session, first, {}, api_url, artifact_root)


def _start(session: Session, job_id: int, api_url: str, artifact_root: str) -> AttemptOrder:
    _, token = start_attempt(session, job_id)
    job = session.get_one(Job, job_id)
    job.queue_reason = None
    return _order(job, token, api_url, artifact_root)


def claim_job(
    session: Session, job_id: int, *, api_url: str, artifact_root: str
) -> AttemptOrder | None:
    """Claim this job if it is still queued and nobody else is claiming it.

    For a dispatcher that ranks the queue itself (fair share); the same locking
    as ``claim_next``. The caller commits.
    """
    return _claim(
        session, _THIS_JOB, {"claim_job_id": job_id}, api_url, artifact_root, _CLAIM_THIS_JOB
    )


def _claim(
    session: Session,
    which: Select,
    parameters: dict[str, Any],
    api_url: str,
    artifact_root: str,
    statement: Any = None,
) -> AttemptOrder | None:
    """Claim the job ``which`` selects (its id, the row locked, skipping locked
    rows); on PostgreSQL with ``statement``, ``which``'s claim if built before."""
    if session.get_bind().dialect.name == "postgresql":
        token = new_token(ATTEMPT_TOKEN_PREFIX)
        row = session.execute(
            _claim_statement(which) if statement is None else statement,
            {**parameters, "claim_now": utcnow(), "claim_token_hash": hash_token(token)},
        ).first()
        if row is None:
            return None
        # The statement sent its NOTIFY; the commit tells this process's answers.
        announce(session, new_job_keys(row.id), notified=True)
        return _order(row, token, api_url, artifact_root)
    take_sqlite_write_lock(session)
    job_id = session.scalar(which, parameters)
    if job_id is None:
        return None
    return _start(session, job_id, api_url, artifact_root)


def _claim_statement(which: Select) -> Any:
    """PostgreSQL: start the job ``which`` selects in one statement, as
    start_attempt does it (queued to running, the next attempt number, the
    first start kept, the queue reason cleared; the job's open attempts
    superseded and a live one inserted with ``:claim_token_hash``), returning
    what the attempt's order needs. No row: nothing was claimed.

    Its parameters are named after no column: SQLAlchemy makes an execute's
    parameter named after a column of a DML statement's table a value to SET,
    in the CTEs' statements too."""
    now = bindparam("claim_now", type_=UtcDateTime())
    claimed = (
        update(Job)
        .where(Job.id == which.scalar_subquery())
        .values(
            status=JobStatus.RUNNING.value,
            attempt=Job.attempt + 1,
            started_at=func.coalesce(Job.started_at, now),
            queue_reason=None,
        )
        .returning(Job.id, Job.attempt, Job.spec, Job.cpus, Job.gpus, Job.memory_gb)
        .cte("claimed")
    )
    superseded = (
        update(JobAttempt)
        .where(
            JobAttempt.job_id == claimed.c.id,
            JobAttempt.number < claimed.c.attempt,
            JobAttempt.ended_at.is_(None),
        )
        .values(status=AttemptStatus.SUPERSEDED.value, ended_at=now)
        .cte("superseded")
    )
    started = insert(JobAttempt).from_select(
        ["job_id", "number", "token_hash", "status", "started_at"],
        select(claimed.c.id, claimed.c.attempt, bindparam("claim_token_hash"), literal(LIVE), now),
    )
    return (
        select(*claimed.c, notify_new_job(claimed.c.id))
        .add_cte(superseded)
        .add_cte(started.cte("started"))
    )


_THIS_JOB = (
    select(Job.id)
    .where(Job.id == bindparam("claim_job_id"), Job.status == JobStatus.QUEUED.value)
    .with_for_update(skip_locked=True)
)
_CLAIM_THIS_JOB = _claim_statement(_THIS_JOB)


def _order(job: Any, token: str, api_url: str, artifact_root: str) -> AttemptOrder:
    """The order for the attempt just started on ``job`` (a Job or a claimed row)."""
    return AttemptOrder(
        job_id=job.id,
        attempt=job.attempt,
        token=token,
        spec=dict(job.spec),
        api_url=api_url,
        artifact_root=artifact_root,
        cpus=job.cpus,
        gpus=job.gpus,
        memory_gb=job.memory_gb,
    )
