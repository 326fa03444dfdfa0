"""Attempts: minting a worker's per-attempt token and applying what it reports.

Every change to a job happens with the job row locked (``SELECT ... FOR UPDATE``
on PostgreSQL; on SQLite a no-op write takes the database's single write lock
first, so the reads that follow cannot go stale). Event sequence numbers are
allocated under that lock, and the unique constraints on ``job_events`` stay
as the last guard.

Nothing here commits: the caller owns the transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from server.auth.tokens import ATTEMPT_TOKEN_PREFIX, hash_token, new_token
from server.db.models import Artifact, CycleResultRow, Job, JobAttempt, JobEvent
from server.jobs.states import JobStatus, transition
from silo_contract.reports import CYCLE_COLUMNS, EVENT_COLUMNS

LIVE = "running"
SUPERSEDED = "superseded"

# A cycle_results row holds a CycleResult's values beside its key.
CYCLE_VALUE_COLUMNS = tuple(name for name in CYCLE_COLUMNS if name != "cycle")


class JobNotFoundError(LookupError):
    """The job does not exist."""


class AttemptSupersededError(Exception):
    """The attempt is not the job's live attempt any more; its reports are refused."""


class IllegalReportError(ValueError):
    """A status report the job's state does not allow (message is for the worker)."""


def _now() -> datetime:
    return datetime.now(UTC)


def take_sqlite_write_lock(session: Session) -> None:
    """On SQLite, take the database's write lock now (a no-op elsewhere).

    SQLite has no row locks: a transaction that reads and then writes can fail
    when it upgrades a stale read. A write statement first (one that matches no
    row is enough) makes concurrent writers queue on the busy timeout instead.
    """
    if session.get_bind().dialect.name == "sqlite":
        session.execute(update(Job.__table__).where(Job.id == -1).values(event_seq=Job.event_seq))


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


def _reload_attempt(session: Session, attempt: JobAttempt) -> JobAttempt:
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


def _require_live(session: Session, attempt: JobAttempt) -> tuple[Job, JobAttempt]:
    job = lock_job(session, attempt.job_id)
    attempt = _reload_attempt(session, attempt)
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
    now = _now()
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
        .values(status=SUPERSEDED, ended_at=now)
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
    attempt.ended_at = _now()
    session.flush()
    return True


@dataclass(frozen=True)
class EventsOutcome:
    accepted: int
    duplicates: int
    last_seq: int


def _event_row(job_id: int, number: int, seq: int, event: Mapping[str, Any]) -> JobEvent:
    values = {name: event[name] for name in EVENT_COLUMNS}
    extras = dict(event.get("extras") or {})
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
    job, attempt = _require_live(session, attempt)
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


def record_cycle(session: Session, attempt: JobAttempt, result: Mapping[str, Any]) -> UpsertOutcome:
    """Store one cycle-table row; the same or a newer attempt replaces an older row."""
    job, attempt = _require_live(session, attempt)
    cycle = int(result["cycle"])
    values: dict[str, Any] = {name: result[name] for name in CYCLE_VALUE_COLUMNS}
    values["extras"] = dict(result.get("extras") or {})
    values["attempt"] = attempt.number
    row = session.scalar(
        select(CycleResultRow).where(CycleResultRow.job_id == job.id, CycleResultRow.cycle == cycle)
    )
    if row is None:
        session.add(CycleResultRow(job_id=job.id, cycle=cycle, **values))
        session.flush()
        return UpsertOutcome(created=True, changed=True)
    if row.attempt > attempt.number:
        raise AttemptSupersededError(
            f"cycle {cycle} was already reported by a later attempt ({row.attempt})"
        )
    if all(getattr(row, name) == value for name, value in values.items()):
        return UpsertOutcome(created=False, changed=False)
    for name, value in values.items():
        setattr(row, name, value)
    session.flush()
    return UpsertOutcome(created=False, changed=True)


def record_artifact(
    session: Session, attempt: JobAttempt, artifact: Mapping[str, Any]
) -> UpsertOutcome:
    """Store (or replace) the job's artifact of this name."""
    job, attempt = _require_live(session, attempt)
    values = {
        "attempt": attempt.number,
        "size": int(artifact["size"]),
        "checksum": str(artifact["checksum"]).lower(),
        "location": str(artifact["location"]),
    }
    name = str(artifact["name"])
    row = session.scalar(select(Artifact).where(Artifact.job_id == job.id, Artifact.name == name))
    if row is None:
        session.add(Artifact(job_id=job.id, name=name, **values))
        session.flush()
        return UpsertOutcome(created=True, changed=True)
    if all(getattr(row, key) == value for key, value in values.items()):
        return UpsertOutcome(created=False, changed=False)
    for key, value in values.items():
        setattr(row, key, value)
    row.created_at = _now()
    session.flush()
    return UpsertOutcome(created=False, changed=True)


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
    attempt = _reload_attempt(session, attempt)
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
    now = _now()
    job.finished_at = now
    if status == JobStatus.FAILED:
        job.error_message = message or "the worker reported a failure"
    attempt.status = status
    attempt.ended_at = now
    session.flush()
    return StatusOutcome(job.status, changed=True)


LOST = "lost"
KILLED = "killed"


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
    end_attempt(session, job_id, number, LOST)
    job.progress_note = None  # the lost worker's; the next attempt reports its own
    now = _now()
    if job.status == JobStatus.CANCELLING:
        job.status = transition(job.status, JobStatus.CANCELLED)
        job.finished_at = now
    elif job.attempt < max_attempts:
        job.status = transition(job.status, JobStatus.QUEUED)
        job.queue_reason = f"attempt {number} lost ({reason}); it will resume from its checkpoint"
    else:
        job.status = transition(job.status, JobStatus.FAILED)
        job.finished_at = now
        job.error_message = f"attempt {number} of {max_attempts} lost ({reason}); no retries left"
    session.flush()
    return JobStatus(job.status)


def finish_cancel(session: Session, job_id: int, number: int) -> bool:
    """A cancelling job whose worker was killed after the grace period ends cancelled."""
    job = lock_job(session, job_id)
    if job.attempt != number or job.status != JobStatus.CANCELLING:
        return False
    end_attempt(session, job_id, number, KILLED)
    job.status = transition(job.status, JobStatus.CANCELLED)
    job.finished_at = _now()
    session.flush()
    return True
