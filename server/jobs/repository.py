"""Queries and writes behind the jobs API; every function takes the caller's Session.

The caller owns the transaction: functions here add, flush and read, and only
``submit_job`` commits (its answer is the job as stored).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from sqlalchemy import (
    Engine,
    Integer,
    String,
    bindparam,
    func,
    insert,
    literal_column,
    select,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from server.changes.book import new_job_keys
from server.changes.tracking import announce, notify_new_job
from server.db.models import Artifact, CycleResultRow, Job, JobEvent, JobTag, utcnow
from server.jobs.sqlite_submits import SubmitStatements, group_commit
from server.jobs.states import transition
from server.jobs.views import JobView, job_view
from silo_contract.jobs import QUEUE_COUNT_LIMIT
from silo_contract.status import JobStatus
from silo_core.spec import JobSpec

RETRYABLE = frozenset({JobStatus.FAILED, JobStatus.CANCELLED})


class IdempotencyConflictError(Exception):
    """The idempotency key was used before with a different request body."""

    def __init__(self, job_id: int) -> None:
        super().__init__(
            f"the Idempotency-Key was already used for job {job_id} with a different body"
        )
        self.job_id = job_id


def request_hash(body: Any) -> str:
    """SHA-256 of the body as canonical JSON (sorted keys, no spaces)."""
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


# --- submit ---------------------------------------------------------------


def find_by_idempotency_key(session: Session, owner_id: int, key: str) -> Job | None:
    return session.scalar(select(Job).where(Job.owner_id == owner_id, Job.idempotency_key == key))


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


def spec_columns(spec: JobSpec) -> dict[str, Any]:
    """What a job stores of its spec: the spec itself, its identities and its plan."""
    return {
        "spec": spec.model_dump(mode="json"),
        "spec_hash": spec.identity(),
        "dense_identity": spec.dense_identity(),
        **plan_columns(spec),
    }


def queued_columns(
    *,
    owner_id: int,
    spec: JobSpec,
    name: str | None,
    priority: int,
    resources: dict[str, float | None],
) -> dict[str, Any]:
    """What every new queued job stores, a submit's or a study member's: its
    owner, name, priority and resources, and what it keeps of its spec."""
    return {
        "owner_id": owner_id,
        "name": name,
        **spec_columns(spec),
        "status": JobStatus.QUEUED.value,
        "priority": priority,
        **resources,
    }


def queued_job(
    *,
    owner_id: int,
    spec: JobSpec,
    name: str | None,
    priority: int,
    tags: Sequence[str],
    resources: dict[str, float | None],
    study_id: int,
    study_label: str,
) -> Job:
    """A study member's new row (queued_columns, its tags, its place in the study)."""
    columns = queued_columns(
        owner_id=owner_id, spec=spec, name=name, priority=priority, resources=resources
    )
    return Job(
        **columns,
        tags=[JobTag(tag=tag) for tag in sorted(set(tags))],
        study_id=study_id,
        study_label=study_label,
    )


# A submit writes with Core statements built once here (not the ORM's unit of
# work, which cost as much as the rest of the submit), and its insert returns
# what the answer needs beyond what was written: the owner's name and the
# number of queued jobs ahead of the new one (views.jobs_ahead's count; the new
# row is never among them). So the answer reads nothing back. The subqueries
# are text: SQLAlchemy correlates none into a RETURNING clause, and SQLite's
# RETURNING names its table's columns bare.
_AHEAD_OF_NEW = (
    "ahead.priority > jobs.priority",
    "ahead.priority = jobs.priority AND ahead.created_at < jobs.created_at",
    "ahead.priority = jobs.priority AND ahead.created_at = jobs.created_at AND ahead.id < jobs.id",
)
_QUEUED = f"SELECT 1 FROM jobs AS ahead WHERE ahead.status = '{JobStatus.QUEUED.value}'"
_QUEUED_AHEAD = {
    # One walk of ix_jobs_queue from its end: higher priorities first, then the
    # job's own from the newest back, which for a new job are all ahead of it,
    # so the walk stops after QUEUE_COUNT_LIMIT + 1 rows. Without the ORDER BY
    # PostgreSQL filtered the queue in a sequential scan of the table, whose
    # queued rows are the newest, at its end (7 ms at 12,000 queued of 112,000
    # jobs against 0.2 ms); three ranges ordered each their own way walked
    # ix_jobs_created_id through every finished job instead.
    "postgresql": f"{_QUEUED} AND ({' OR '.join(_AHEAD_OF_NEW)}) "
    "ORDER BY ahead.priority DESC, ahead.created_at DESC",
    # Three ranges of ix_jobs_queue, which SQLite walks faster than it filters one.
    "sqlite": " UNION ALL ".join(f"{_QUEUED} AND {where}" for where in _AHEAD_OF_NEW),
}
# Counted as views.jobs_ahead counts: up to QUEUE_COUNT_LIMIT + 1.
_COUNT_AHEAD = {
    dialect: f"SELECT count(*) FROM ({rows} LIMIT {QUEUE_COUNT_LIMIT + 1}) AS counted"
    for dialect, rows in _QUEUED_AHEAD.items()
}
_OWNER_NAME = "(SELECT users.name FROM users WHERE users.id = jobs.owner_id)"


def _insert_job(dialect: Any, *, keyed: bool) -> Any:
    """The job's insert on ``dialect`` (a module of sqlalchemy.dialects),
    returning its id and the owner's name, and on PostgreSQL the queue count.
    ``keyed``: nothing is inserted (and nothing returned) where the owner used
    the idempotency key before; PostgreSQL waits for a concurrent first use of
    it to end."""
    statement = dialect.insert(Job)
    if keyed:
        statement = statement.on_conflict_do_nothing(index_elements=["owner_id", "idempotency_key"])
    returned = [Job.id, literal_column(_OWNER_NAME, String).label("owner")]
    if dialect is postgresql:
        returned.append(literal_column(f"({_COUNT_AHEAD['postgresql']})", Integer).label("ahead"))
    return statement.returning(*returned)


_SUBMIT_COLUMNS = (
    *("owner_id", "name", "spec", "spec_hash", "dense_identity", "model", "dataset"),
    *("schedule", "planned_cycles", "dense_epochs", "epochs_per_cycle", "status", "priority"),
    *("created_at", "attempt", "cpus", "gpus", "memory_gb", "idempotency_key", "request_hash"),
)


def _insert_job_and_tags(*, keyed: bool) -> Any:
    """PostgreSQL: the job's insert and its tags' (the array ``tags``) in one
    statement, which returns what _insert_job returns."""
    job = (
        _insert_job(postgresql, keyed=keyed)
        .values({column: bindparam(column) for column in _SUBMIT_COLUMNS})
        .cte("new_job")
    )
    tags = bindparam("tags", type_=postgresql.ARRAY(String))
    new_tags = insert(JobTag).from_select(["job_id", "tag"], select(job.c.id, func.unnest(tags)))
    # The statement sends its own NOTIFY (what new_job_keys names), delivered
    # when it commits: no round trip, and no commit of a NOTIFY of its own.
    return select(job.c.id, job.c.ahead, job.c.owner, notify_new_job(job.c.id)).add_cte(
        new_tags.cte("new_tags")
    )


_SUBMIT_POSTGRESQL = {keyed: _insert_job_and_tags(keyed=keyed) for keyed in (False, True)}
_SUBMIT_SQLITE = SubmitStatements(
    insert_job={keyed: _insert_job(sqlite, keyed=keyed) for keyed in (False, True)},
    columns=_SUBMIT_COLUMNS,
    count_ahead=text(f"SELECT ({_COUNT_AHEAD['sqlite']}) FROM jobs WHERE jobs.id = :job_id"),
)
# One statement is atomic by itself: on PostgreSQL the submit's runs outside a
# transaction, without the BEGIN and COMMIT round trips around it.
_AUTOCOMMIT = {"isolation_level": "AUTOCOMMIT"}


def submit_session(sessions: sessionmaker[Session]) -> Session:
    """A session for one submit (``sessions()``). On PostgreSQL it runs each
    statement outside a transaction: the checks before the write only read, and
    the write is one statement, atomic by itself, so no BEGIN and COMMIT round
    trips. On SQLite, whose submit writes in two statements, it is as made."""
    session = sessions()
    if session.get_bind().dialect.name == "postgresql":
        session.connection(execution_options=_AUTOCOMMIT)
    return session


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
) -> tuple[JobView, bool]:
    """Store a queued job with its tags atomically and commit; ``(job, created)``,
    the job as GET /v1/jobs/{id} shows it.

    With an idempotency key already used by this owner, the earlier job comes
    back (``created`` False) if the body is the same, else
    IdempotencyConflictError. Concurrent first uses of a key meet at the
    unique constraint: one inserts, the others insert nothing and read its job.
    """
    values = {
        **queued_columns(
            owner_id=owner_id, spec=spec, name=name, priority=priority, resources=resources
        ),
        "created_at": utcnow(),
        "attempt": 0,
        "idempotency_key": idempotency_key,
        "request_hash": body_hash,
    }
    stored_tags = sorted(set(tags))
    keyed = idempotency_key is not None
    bind = session.get_bind()
    postgres = bind.dialect.name == "postgresql"
    if postgres and not session.in_transaction():
        connection = session.connection(execution_options=_AUTOCOMMIT)
    elif postgres:  # a transaction begun before
        connection = session.connection()
    row: Any  # the statement's row (PostgreSQL) or a Written (SQLite): id, owner, ahead
    while True:
        if postgres:
            parameters = {**values, "tags": stored_tags}
            row = connection.execute(_SUBMIT_POSTGRESQL[keyed], parameters).first()
        else:  # written and committed with the submits that wait beside it
            assert isinstance(bind, Engine)
            row = group_commit(bind, _SUBMIT_SQLITE).submit(values, stored_tags, keyed=keyed)
        if row is not None:
            break
        assert idempotency_key is not None  # only a keyed insert inserts nothing
        existing = find_by_idempotency_key(session, owner_id, idempotency_key)
        if existing is not None:
            if existing.request_hash != body_hash:
                raise IdempotencyConflictError(existing.id)
            view = job_view(session, existing.id)
            assert view is not None
            return view, False
        # The job that used the key is gone since: the key is free again.
    if postgres:
        # The statement sent its NOTIFY; the commit (none to send, outside a
        # transaction) tells this process's answers.
        announce(session, new_job_keys(row.id), notified=True)
        session.commit()
    return _submitted(row.id, row.owner, stored_tags, row.ahead or 0, values), True


def _submitted(
    job_id: int, owner: str, tags: list[str], ahead: int, values: dict[str, Any]
) -> JobView:
    """A job just inserted as views.job_view would read it."""
    memory_gb = values["memory_gb"]
    return JobView(
        id=job_id,
        name=values["name"],
        owner_id=values["owner_id"],
        owner=owner,
        status=values["status"],
        priority=values["priority"],
        tags=tags,
        spec_hash=values["spec_hash"],
        created_at=values["created_at"],
        started_at=None,
        finished_at=None,
        attempt=values["attempt"],
        error_message=None,
        queue_reason=None,
        progress_cycle=None,
        progress_epoch=None,
        progress_sparsity=None,
        best_accuracy=None,
        progress_note=None,
        model=values["model"],
        dataset=values["dataset"],
        schedule=values["schedule"],
        planned_cycles=values["planned_cycles"],
        dense_epochs=values["dense_epochs"],
        epochs_per_cycle=values["epochs_per_cycle"],
        spec=values["spec"],
        # Float columns: what the database hands back is a float, whatever was sent.
        cpus=float(values["cpus"]),
        gpus=float(values["gpus"]),
        memory_gb=None if memory_gb is None else float(memory_gb),
        ahead=int(ahead),
    )


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
