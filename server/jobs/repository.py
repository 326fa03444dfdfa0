"""Queries and writes behind the jobs API; every function takes the caller's Session.

The caller owns the transaction: functions here add, flush and read, and only
``submit_job`` commits (it has to, to learn whether its idempotency key won).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from server.db.models import Artifact, CycleResultRow, Job, JobEvent, JobTag, utcnow
from server.jobs.states import transition
from silo_contract.status import JobStatus
from silo_core.spec import JobSpec

RETRYABLE = frozenset({JobStatus.FAILED, JobStatus.CANCELLED})


class IdempotencyConflictError(Exception):
    """The idempotency key was used before with a different request body."""

    def __init__(self, job: Job) -> None:
        super().__init__(
            f"the Idempotency-Key was already used for job {job.id} with a different body"
        )
        self.job = job


def request_hash(body: Any) -> str:
    """SHA-256 of the body as canonical JSON (sorted keys, no spaces)."""
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


# --- submit ---------------------------------------------------------------


def find_by_idempotency_key(session: Session, owner_id: int, key: str) -> Job | None:
    return session.scalar(select(Job).where(Job.owner_id == owner_id, Job.idempotency_key == key))


def _replay(existing: Job, body_hash: str) -> Job:
    if existing.request_hash != body_hash:
        raise IdempotencyConflictError(existing)
    return existing


def plan_columns(spec: JobSpec) -> dict[str, Any]:
    """The job's plan columns: the spec's names and its planned cycles and epochs."""
    return {
        "model": spec.model.name,
        "dataset": spec.dataset.name,
        "schedule": spec.schedule.name,
        "planned_cycles": spec.pruning.planned_cycles(),
        "dense_epochs": spec.training.dense_epochs,
        "epochs_per_cycle": spec.training.epochs_per_cycle,
    }


def queued_job(
    *,
    owner_id: int,
    spec: JobSpec,
    name: str | None,
    priority: int,
    tags: Sequence[str],
    resources: dict[str, float | None],
    idempotency_key: str | None = None,
    request_hash: str | None = None,
    study_id: int | None = None,
    study_label: str | None = None,
) -> Job:
    """A new queued job's row (a submit's or a study member's); what it stores
    of its spec is derived from ``spec`` here."""
    return Job(
        owner_id=owner_id,
        name=name,
        spec=spec.model_dump(mode="json"),
        spec_hash=spec.identity(),
        dense_identity=spec.dense_identity(),
        **plan_columns(spec),
        status=JobStatus.QUEUED.value,
        priority=priority,
        tags=[JobTag(tag=tag) for tag in sorted(set(tags))],
        **resources,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        study_id=study_id,
        study_label=study_label,
    )


def submit_job(
    session: Session,
    *,
    owner_id: int,
    spec: JobSpec,
    priority: int,
    name: str | None,
    tags: Sequence[str],
    resources: dict[str, float | None],
    idempotency_key: str | None,
    body_hash: str,
) -> tuple[Job, bool]:
    """Store a queued job with its tags in one transaction; ``(job, created)``.

    With an idempotency key already used by this owner, the earlier job comes
    back (``created`` False) if the body is the same, else
    IdempotencyConflictError. Two concurrent first uses of a key meet at the
    unique constraint; the loser rolls back and reads the winner's job.
    """
    if idempotency_key is not None:
        existing = find_by_idempotency_key(session, owner_id, idempotency_key)
        if existing is not None:
            return _replay(existing, body_hash), False
    job = queued_job(
        owner_id=owner_id,
        spec=spec,
        name=name,
        priority=priority,
        tags=tags,
        resources=resources,
        idempotency_key=idempotency_key,
        request_hash=body_hash,
    )
    session.add(job)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        if idempotency_key is None:
            raise
        existing = find_by_idempotency_key(session, owner_id, idempotency_key)
        if existing is None:
            raise
        return _replay(existing, body_hash), False
    return job, True


# --- read -----------------------------------------------------------------


def get_job(session: Session, job_id: int, *, for_update: bool = False) -> Job | None:
    """The job's row (locked for the transaction with ``for_update``); views.job_view
    is what the API shows."""
    return session.get(Job, job_id, with_for_update=for_update)


def list_cycles(session: Session, job_id: int) -> list[CycleResultRow]:
    query = select(CycleResultRow).where(CycleResultRow.job_id == job_id)
    return list(session.scalars(query.order_by(CycleResultRow.cycle)))


def list_events(
    session: Session,
    job_id: int,
    *,
    after: int,
    limit: int,
    include_superseded: bool = False,
) -> list[JobEvent]:
    query = select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.seq > after)
    if not include_superseded:
        query = query.where(JobEvent.superseded.is_(False))
    return list(session.scalars(query.order_by(JobEvent.seq).limit(limit)))


def job_status(session: Session, job_id: int) -> str | None:
    return session.scalar(select(Job.status).where(Job.id == job_id))


def list_artifacts(session: Session, job_id: int) -> list[Artifact]:
    query = select(Artifact).where(Artifact.job_id == job_id)
    return list(session.scalars(query.order_by(Artifact.name)))


def get_artifact(session: Session, job_id: int, name: str) -> Artifact | None:
    return session.scalar(select(Artifact).where(Artifact.job_id == job_id, Artifact.name == name))


def artifact_path(location: str) -> Path | None:
    """The local file at an artifact's location, or None if it is stored elsewhere."""
    if location.startswith("file:"):
        parsed = urlparse(location)
        if parsed.netloc not in ("", "localhost"):
            return None
        return Path(unquote(parsed.path))
    if "://" in location:
        return None
    return Path(location)


# --- state changes ----------------------------------------------------------


def cancel_job(job: Job) -> bool:
    """Queued jobs are cancelled at once, running ones asked to stop (the
    dispatcher finishes them); True if anything changed. IllegalTransitionError
    for jobs already final."""
    current = JobStatus(job.status)
    if current == JobStatus.CANCELLING:
        return False
    if current == JobStatus.RUNNING:
        job.status = transition(current, JobStatus.CANCELLING).value
        return True
    job.status = transition(current, JobStatus.CANCELLED).value
    job.finished_at = utcnow()
    return True


class NotRetryableError(ValueError):
    def __init__(self, status: str) -> None:
        super().__init__(
            f"a {status} job cannot be retried; only failed or cancelled jobs can be queued again"
        )


def retry_job(job: Job) -> None:
    """Queue a failed or cancelled job again; its next attempt resumes it."""
    current = JobStatus(job.status)
    if current not in RETRYABLE:
        raise NotRetryableError(current.value)
    job.status = transition(current, JobStatus.QUEUED).value
    job.error_message = None
    job.finished_at = None
    job.queue_reason = None
