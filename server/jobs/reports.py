"""Applying what an attempt's worker reports: epoch events, cycle-table rows,
artifacts and status.

Only the job's live attempt may report (attempts.require_live), and every
report is applied with the job row locked. Event sequence numbers are
allocated under that lock, and the unique constraints on ``job_events`` stay
as the last guard. Reports are idempotent: a repeat changes nothing.

Nothing here commits: the caller owns the transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from server.db.models import Artifact, CycleResultRow, Job, JobAttempt, JobEvent, utcnow
from server.jobs.attempts import (
    AttemptSupersededError,
    is_live,
    lock_job,
    reload_attempt,
    require_live,
)
from server.jobs.states import transition
from silo_contract.reports import CYCLE_COLUMNS, EVENT_COLUMNS
from silo_contract.status import JobStatus

# A cycle_results row holds a CycleResult's values beside its key.
CYCLE_VALUE_COLUMNS = tuple(name for name in CYCLE_COLUMNS if name != "cycle")


class IllegalReportError(ValueError):
    """A status report the job's state does not allow (message is for the worker)."""


@dataclass(frozen=True)
class EventsOutcome:
    accepted: int
    duplicates: int
    last_seq: int


def _event_row(job_id: int, number: int, seq: int, event: Mapping[str, Any]) -> JobEvent:
    extras = dict(event.get("extras") or {})
    values = {name: event[name] for name in EVENT_COLUMNS}
    return JobEvent(job_id=job_id, attempt=number, seq=seq, extras=extras, **values)


def _refresh_progress(session: Session, job: Job) -> None:
    counted = (JobEvent.job_id == job.id, JobEvent.superseded.is_(False))
    latest = session.execute(
        select(JobEvent.cycle, JobEvent.epoch, JobEvent.sparsity)
        .where(*counted)
        .order_by(JobEvent.cycle.desc(), JobEvent.epoch.desc(), JobEvent.seq.desc())
        .limit(1)
    ).first()
    if latest is not None:
        job.progress_cycle, job.progress_epoch, job.progress_sparsity = latest
    job.best_accuracy = session.scalar(select(func.max(JobEvent.val_accuracy)).where(*counted))


def record_events(
    session: Session, attempt: JobAttempt, events: Iterable[Mapping[str, Any]]
) -> EventsOutcome:
    """Store a batch of epoch events idempotently, keyed by (job, attempt, cycle, epoch).

    New events get the next job-wide sequence numbers in (cycle, epoch) order.
    Reporting a (cycle, epoch) that an earlier attempt already passed means the
    attempt resumed from an earlier checkpoint: the earlier attempts' events
    from that point on are marked superseded.
    """
    job, attempt = require_live(session, attempt)
    batch: dict[tuple[int, int], Mapping[str, Any]] = {}
    duplicates = 0
    for event in events:
        key = (int(event["cycle"]), int(event["epoch"]))
        if key in batch:
            duplicates += 1
        else:
            batch[key] = event
    cycles = {cycle for cycle, _ in batch}
    known = {
        (row.cycle, row.epoch)
        for row in session.execute(
            select(JobEvent.cycle, JobEvent.epoch).where(
                JobEvent.job_id == job.id,
                JobEvent.attempt == attempt.number,
                JobEvent.cycle.in_(cycles),
            )
        )
    }
    fresh = sorted(key for key in batch if key not in known)
    duplicates += len(batch) - len(fresh)
    if not fresh:
        return EventsOutcome(0, duplicates, job.event_seq)

    seq = job.event_seq
    for key in fresh:
        seq += 1
        session.add(_event_row(job.id, attempt.number, seq, batch[key]))
    job.event_seq = seq

    first_cycle, first_epoch = fresh[0]
    session.execute(
        update(JobEvent)
        .where(
            JobEvent.job_id == job.id,
            JobEvent.attempt < attempt.number,
            JobEvent.superseded.is_(False),
            or_(
                JobEvent.cycle > first_cycle,
                and_(JobEvent.cycle == first_cycle, JobEvent.epoch >= first_epoch),
            ),
        )
        .values(superseded=True)
        .execution_options(synchronize_session=False)
    )
    session.flush()
    _refresh_progress(session, job)
    session.flush()
    return EventsOutcome(len(fresh), duplicates, job.event_seq)


@dataclass(frozen=True)
class UpsertOutcome:
    created: bool
    changed: bool


# The rows a report inserts or replaces: a job's cycle-table rows and artifacts.
ReportedRow = TypeVar("ReportedRow", CycleResultRow, Artifact)


def _upsert(
    session: Session,
    model: type[ReportedRow],
    key: dict[str, Any],
    values: dict[str, Any],
    *,
    what: str,
    restamp: str | None = None,
) -> UpsertOutcome:
    """Insert the ``model`` row keyed by ``key`` (its job and its cycle or name)
    holding ``values``, or replace the values of the row there is.

    Created if there was none; changed unless it held ``values`` already (then
    nothing is written). A replaced row's ``restamp`` column is set to now. A row
    a later attempt than ``values["attempt"]`` wrote is never replaced: that is
    AttemptSupersededError, ``what`` naming the row.
    """
    row = session.scalar(select(model).filter_by(**key))
    if row is None:
        session.add(model(**key, **values))
        session.flush()
        return UpsertOutcome(created=True, changed=True)
    if row.attempt > values["attempt"]:
        raise AttemptSupersededError(
            f"{what} was already reported by a later attempt ({row.attempt})"
        )
    if all(getattr(row, name) == value for name, value in values.items()):
        return UpsertOutcome(created=False, changed=False)
    for name, value in values.items():
        setattr(row, name, value)
    if restamp is not None:
        setattr(row, restamp, utcnow())
    session.flush()
    return UpsertOutcome(created=False, changed=True)


def record_cycle(session: Session, attempt: JobAttempt, result: Mapping[str, Any]) -> UpsertOutcome:
    """Store one cycle-table row; the same or a newer attempt replaces an older row."""
    job, attempt = require_live(session, attempt)
    cycle = int(result["cycle"])
    values: dict[str, Any] = {name: result[name] for name in CYCLE_VALUE_COLUMNS}
    values["extras"] = dict(result.get("extras") or {})
    values["attempt"] = attempt.number
    key = {"job_id": job.id, "cycle": cycle}
    return _upsert(session, CycleResultRow, key, values, what=f"cycle {cycle}")


def record_artifact(
    session: Session, attempt: JobAttempt, artifact: Mapping[str, Any]
) -> UpsertOutcome:
    """Store (or replace) the job's artifact of this name; a replaced one is dated anew."""
    job, attempt = require_live(session, attempt)
    values = {
        "attempt": attempt.number,
        "size": int(artifact["size"]),
        "checksum": str(artifact["checksum"]).lower(),
        "location": str(artifact["location"]),
    }
    name = str(artifact["name"])
    key = {"job_id": job.id, "name": name}
    return _upsert(session, Artifact, key, values, what=f"artifact {name!r}", restamp="created_at")


@dataclass(frozen=True)
class StatusOutcome:
    status: str
    changed: bool


def report_status(
    session: Session,
    attempt: JobAttempt,
    status: str,
    message: str | None = None,
    note: str | None = None,
) -> StatusOutcome:
    """Apply a worker's status report through the state machine.

    ``running`` is a heartbeat: it changes no status (the answer tells a worker
    whether the job is being cancelled) and carries the job's progress note
    (None clears it). A final status ends the job and the attempt; replaying
    it from the same attempt changes nothing.
    """
    job = lock_job(session, attempt.job_id)
    attempt = reload_attempt(session, attempt)
    if (
        status != JobStatus.RUNNING
        and attempt.number == job.attempt
        and attempt.status == status
        and job.status == status
    ):
        return StatusOutcome(job.status, changed=False)
    if not is_live(job, attempt):
        raise AttemptSupersededError(
            f"attempt {attempt.number} of job {job.id} is no longer the job's live attempt"
        )
    if status == JobStatus.RUNNING:
        if job.status not in (JobStatus.RUNNING, JobStatus.CANCELLING):
            raise IllegalReportError(
                f"a {job.status} job cannot be resumed by a heartbeat; "
                "only the dispatcher starts attempts"
            )
        if job.progress_note != note:
            job.progress_note = note
            session.flush()
        return StatusOutcome(job.status, changed=False)
    job.status = transition(job.status, status)  # IllegalTransitionError
    job.progress_note = None
    now = utcnow()
    job.finished_at = now
    if status == JobStatus.FAILED:
        job.error_message = message or "the worker reported a failure"
    attempt.status = status
    attempt.ended_at = now
    session.flush()
    return StatusOutcome(job.status, changed=True)
