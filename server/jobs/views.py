"""The read side of jobs: one statement per status poll or list page.

A status poll is the service's hottest request (every CLI watcher, every open
dashboard). It is answered from one SQL statement that brings the job's row,
its owner's name, its tags and, for a queued job, how many jobs are ahead of
it, read as plain rows into :class:`JobView` rather than ORM objects (no
identity map, no lazy loads). The write side (repository, attempts) keeps the
ORM, where row locks and the state machine matter more than microseconds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar

from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    bindparam,
    case,
    exists,
    func,
    literal,
    or_,
    select,
    tuple_,
)
from sqlalchemy.orm import InstrumentedAttribute, Session, aliased

from server.db.models import Job, JobTag, User
from silo_contract.jobs import QUEUE_COUNT_LIMIT
from silo_contract.status import JobStatus

# The queue's order: higher priority first, then older first (id breaks ties).
# claims.claim_next takes jobs in it; jobs_ahead counts in it.
QUEUE_ORDER = (Job.priority.desc(), Job.created_at.asc(), Job.id.asc())
TAG_SEPARATOR = "\x1f"  # cannot occur in a tag (TAG_PATTERN)


class InvalidCursorError(ValueError):
    """A pagination cursor that this server did not hand out."""


@dataclass(frozen=True)
class JobView:
    """A job as the API shows it. The fields after ``spec`` are read only for one job."""

    id: int
    name: str | None
    owner_id: int
    owner: str
    status: str
    priority: int
    tags: list[str]
    spec_hash: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    attempt: int
    error_message: str | None
    queue_reason: str | None
    progress_cycle: int | None
    progress_epoch: int | None
    progress_sparsity: float | None
    best_accuracy: float | None
    progress_note: str | None
    model: str | None
    dataset: str | None
    schedule: str | None
    planned_cycles: int | None
    dense_epochs: int | None
    epochs_per_cycle: int | None
    spec: dict[str, Any] | None = None
    cpus: float | None = None
    gpus: float | None = None
    memory_gb: float | None = None
    ahead: int | None = None  # queued jobs before this one; None unless queued


def jobs_ahead(*, walk_queue_index: bool = False) -> ColumnElement[int]:
    """Correlated count of the queued jobs ahead of the outer query's job in
    QUEUE_ORDER, up to QUEUE_COUNT_LIMIT + 1 (the scan stops there).

    ``walk_queue_index`` (PostgreSQL): read the rows in ix_jobs_queue's order,
    from its end. Without an order PostgreSQL filtered the queue in a
    sequential scan of the table, whose queued rows are the newest, at its
    end: 15 ms at 12,000 queued of 112,000 jobs, against 0.25 to 1.9 ms
    walking the index (0.25 for the newest job, most for the oldest, whose
    walk passes every newer one). SQLite, which serves the three ranges of
    the unordered form from the index, took 0.02 to 0.1 ms that way and 0.2
    to 2.2 ms ordered, so it keeps the unordered form."""
    job = Job
    other = aliased(Job)
    ahead = (
        select(literal(1))
        .select_from(other)
        .where(
            other.status == JobStatus.QUEUED.value,
            or_(
                other.priority > job.priority,
                and_(other.priority == job.priority, other.created_at < job.created_at),
                and_(
                    other.priority == job.priority,
                    other.created_at == job.created_at,
                    other.id < job.id,
                ),
            ),
        )
        .correlate(job)
        .order_by(*((other.priority.desc(), other.created_at.desc()) if walk_queue_index else ()))
        .limit(QUEUE_COUNT_LIMIT + 1)
        .subquery("ahead")
    )
    return select(func.count()).select_from(ahead).correlate(job).scalar_subquery()


_TAGS = (
    select(func.aggregate_strings(JobTag.tag, TAG_SEPARATOR))
    .where(JobTag.job_id == Job.id)
    .correlate(Job)
    .scalar_subquery()
)
_SUMMARY_COLUMNS = (
    Job.id,
    Job.name,
    Job.owner_id,
    User.name.label("owner"),
    Job.status,
    Job.priority,
    _TAGS.label("tags"),
    Job.spec_hash,
    Job.created_at,
    Job.started_at,
    Job.finished_at,
    Job.attempt,
    Job.error_message,
    Job.queue_reason,
    Job.progress_cycle,
    Job.progress_epoch,
    Job.progress_sparsity,
    Job.best_accuracy,
    Job.progress_note,
    Job.model,
    Job.dataset,
    Job.schedule,
    Job.planned_cycles,
    Job.dense_epochs,
    Job.epochs_per_cycle,
)


def _ahead(*, walk_queue_index: bool) -> ColumnElement[int | None]:
    ahead = jobs_ahead(walk_queue_index=walk_queue_index)
    return case((Job.status == JobStatus.QUEUED.value, ahead), else_=None)


def _views(detail: bool, *, walk_queue_index: bool = False) -> Select[Any]:
    ahead = _ahead(walk_queue_index=walk_queue_index).label("ahead")
    detail_columns = (Job.spec, Job.cpus, Job.gpus, Job.memory_gb, ahead)
    columns = (*_SUMMARY_COLUMNS, *detail_columns) if detail else _SUMMARY_COLUMNS
    return select(*columns).join(User, User.id == Job.owner_id)


def _view(row: Any) -> JobView:
    values = row._asdict()
    values["tags"] = sorted(values["tags"].split(TAG_SEPARATOR)) if values["tags"] else []
    return JobView(**values)


# Built once: SQLAlchemy memoises a statement's cache key on the object, and
# building this one afresh per poll made its cache key a tenth of the poll's time.
_ONE_JOB = {
    walk: _views(detail=True, walk_queue_index=walk).where(Job.id == bindparam("job_id"))
    for walk in (False, True)
}


def job_view(session: Session, job_id: int) -> JobView | None:
    """One job with its spec and queue place, in one statement."""
    statement = _ONE_JOB[session.get_bind().dialect.name == "postgresql"]
    row = session.execute(statement, {"job_id": job_id}).first()
    return None if row is None else _view(row)


# --- lists ------------------------------------------------------------------------


# A list page's cursor: "<created_at in microseconds since 1970>.<id>" of the last
# job shown. Every string of this pattern is a place in the (created_at, id)
# order, so a cursor is never "malformed" once it matches.
CURSOR_PATTERN = r"^[0-9]{1,16}\.[0-9]{1,15}$"
_CURSOR = re.compile(CURSOR_PATTERN)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


class _Keyed(Protocol):
    @property
    def created_at(self) -> datetime: ...
    @property
    def id(self) -> int: ...


KeyedT = TypeVar("KeyedT", bound=_Keyed)


def encode_cursor(row: _Keyed) -> str:
    micros = (row.created_at - _EPOCH) // _MICROSECOND
    return f"{micros}.{row.id}"


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    """The (created_at, id) a cursor points after; InvalidCursorError if malformed."""
    if not _CURSOR.fullmatch(cursor):
        raise InvalidCursorError("cursor: not a cursor this server returned")
    micros, _, job_id = cursor.partition(".")
    return _EPOCH + int(micros) * _MICROSECOND, int(job_id)


@dataclass
class JobFilter:
    statuses: list[JobStatus] = field(default_factory=list)
    owner: str | None = None  # by name, as a user filters
    owner_id: int | None = None  # by id, as the read policy restricts
    tag: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None


def list_jobs(
    session: Session, filters: JobFilter, *, limit: int, cursor: str | None = None
) -> tuple[list[JobView], str | None]:
    """Newest first by (created_at, id); keyset pagination, so rows inserted
    between pages neither repeat nor hide older ones."""
    query = _views(detail=False)
    if filters.statuses:
        query = query.where(Job.status.in_([s.value for s in filters.statuses]))
    if filters.owner is not None:
        query = query.where(User.name == filters.owner)
    if filters.owner_id is not None:
        query = query.where(Job.owner_id == filters.owner_id)
    if filters.tag is not None:
        query = query.where(exists().where(JobTag.job_id == Job.id, JobTag.tag == filters.tag))
    if filters.created_after is not None:
        query = query.where(Job.created_at > filters.created_after)
    if filters.created_before is not None:
        query = query.where(Job.created_at < filters.created_before)
    query = newest_first(query, Job.created_at, Job.id, limit=limit, cursor=cursor)
    return page([_view(row) for row in session.execute(query)], limit)


def newest_first(
    query: Select[Any],
    created_at: InstrumentedAttribute[datetime],
    row_id: InstrumentedAttribute[int],
    *,
    limit: int,
    cursor: str | None,
) -> Select[Any]:
    """Keyset pagination on (created_at, id): the rows after ``cursor``, newest
    first, one more than a page (so ``page`` knows whether another follows).
    Rows inserted between pages neither repeat nor hide older ones."""
    if cursor is not None:
        # A row-value comparison, which both databases walk as one index range.
        query = query.where(tuple_(created_at, row_id) < tuple_(*decode_cursor(cursor)))
    return query.order_by(created_at.desc(), row_id.desc()).limit(limit + 1)


def page(rows: list[KeyedT], limit: int) -> tuple[list[KeyedT], str | None]:
    """A page of ``newest_first``'s rows and the cursor of the next, if any."""
    if len(rows) > limit:
        rows = rows[:limit]
        return rows, encode_cursor(rows[-1])
    return rows, None
