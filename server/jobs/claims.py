"""Claiming queued jobs: how a dispatcher takes work without racing another.

Several dispatchers (one per API replica, or standalone) may scan the same
queue. On PostgreSQL the claim reads the first queued job with
``FOR UPDATE SKIP LOCKED``: a job another claimer is taking is passed over
instead of waited on, so two claimers never get the same job and never block
each other. SQLite has one writer at a time, so there the claim takes the
write lock first and claimers simply queue behind it.

The claim and the attempt it starts are one transaction: when it commits the
job is ``running`` with a fresh attempt token, or nothing happened.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session

from server.db.models import Job
from server.jobs.attempts import start_attempt, take_sqlite_write_lock
from server.jobs.views import QUEUE_ORDER
from silo_contract.order import AttemptOrder
from silo_contract.status import JobStatus


def claim_next(
    session: Session, *conditions: ColumnElement[bool], api_url: str, artifact_root: str
) -> AttemptOrder | None:
    """Claim the first queued job (in queue order) that nobody else is claiming.

    ``conditions`` narrow the candidates (for example owners under their quota).
    Starts the job's next attempt and returns it, or None when no queued job
    matches. The caller commits.
    """
    take_sqlite_write_lock(session)
    job_id = session.scalar(
        select(Job.id)
        .where(Job.status == JobStatus.QUEUED.value, *conditions)
        .order_by(*QUEUE_ORDER)
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    if job_id is None:
        return None
    return _start(session, job_id, api_url, artifact_root)


def _start(session: Session, job_id: int, api_url: str, artifact_root: str) -> AttemptOrder:
    attempt, token = start_attempt(session, job_id)
    job = session.get_one(Job, job_id)
    job.queue_reason = None
    return AttemptOrder(
        job_id=job.id,
        attempt=attempt,
        token=token,
        spec=dict(job.spec),
        api_url=api_url,
        artifact_root=artifact_root,
        cpus=job.cpus,
        gpus=job.gpus,
        memory_gb=job.memory_gb,
    )


def claim_job(
    session: Session, job_id: int, *, api_url: str, artifact_root: str
) -> AttemptOrder | None:
    """Claim this job if it is still queued and nobody else is claiming it.

    For a dispatcher that ranks the queue itself (fair share); the same locking
    as ``claim_next``. The caller commits.
    """
    take_sqlite_write_lock(session)
    queued = session.scalar(
        select(Job.id)
        .where(Job.id == job_id, Job.status == JobStatus.QUEUED.value)
        .with_for_update(skip_locked=True)
    )
    if queued is None:
        return None
    return _start(session, job_id, api_url, artifact_root)
