"""Each transaction names what it changed; its commit tells every process.

Every session the project makes (server/db/session.make_session_factory) is
tracked: after each flush the rows it wrote become keys (server/changes/book.py),
collected on the session until the transaction ends. On commit the keys go

* to every ``ChangeBook`` of this process, right after the commit (so a
  process reads its own writes: the next poll here is never answered 304 from
  what the commit replaced), and
* on PostgreSQL, to every other process, as one ``NOTIFY`` on ``CHANNEL`` sent
  inside the transaction: PostgreSQL delivers it when, and only if, the
  transaction commits.

A rollback forgets them. A statement that writes these tables without the ORM
(``update(...)`` on a connection) flushes nothing: it names its keys itself
with ``announce``. A statement may also send its own NOTIFY (``notify``, a
column of the statement: the submit's, which saves a round trip and, outside a
transaction, a commit of its own); it then announces its keys with
``notified=True``, for this process's books only.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterable
from typing import Any

from sqlalchemy import ColumnElement, event, func, inspect, select
from sqlalchemy.orm import Session, sessionmaker

from server.changes.book import (
    ALL,
    JOB_KEY_PREFIX,
    JOBS,
    QUEUE,
    STUDIES,
    ChangeBook,
    job_key,
    study_key,
    user_key,
)
from server.db.models import ApiToken, CycleResultRow, Job, JobTag, Study, User

CHANNEL = "silo_changes"
MAX_PAYLOAD = 7000  # NOTIFY's limit is 8000 bytes; more keys than fit say "everything"
_KEYS = "silo_changes"  # where a session collects its keys (Session.info)
_NOTIFIED = "silo_changes_notified"  # keys whose NOTIFY a statement sent itself

_books: set[ChangeBook] = set()
_books_lock = threading.Lock()


def register(book: ChangeBook) -> None:
    """Let ``book`` hear this process's commits."""
    with _books_lock:
        _books.add(book)


def unregister(book: ChangeBook) -> None:
    with _books_lock:
        _books.discard(book)


def publish_here(keys: Collection[str]) -> None:
    """Tell this process's books that ``keys`` changed."""
    with _books_lock:
        books = list(_books)
    for book in books:
        book.mark(keys)


def announce(session: Session, keys: Iterable[str], *, notified: bool = False) -> None:
    """Add ``keys`` to what the session's transaction changed. ``notified``: a
    statement of the transaction sent their NOTIFY (``notify``); the commit
    tells only this process."""
    session.info.setdefault(_NOTIFIED if notified else _KEYS, set()).update(keys)


def notify(payload: ColumnElement[str]) -> ColumnElement[Any]:
    """A column that sends ``payload`` (keys as ``encode`` writes them) on
    CHANNEL when the statement's transaction commits."""
    return func.pg_notify(CHANNEL, payload)


def notify_new_job(job_id: ColumnElement[Any]) -> ColumnElement[Any]:
    """A column that sends, on commit, what book.new_job_keys names for the job
    whose id is ``job_id`` (a column of the statement): its key, the lists, the queue."""
    return notify(func.concat(JOB_KEY_PREFIX, job_id, "," + encode((JOBS, QUEUE))))


def encode(keys: Collection[str]) -> str:
    payload = ",".join(sorted(keys))
    return ALL if ALL in keys or len(payload) > MAX_PAYLOAD else payload


def decode(payload: str) -> set[str]:
    return {key for key in payload.split(",") if key}


# --- what a flushed row changed ------------------------------------------------


def _moved_in_queue(job: Job) -> bool:
    state = inspect(job)
    return state.attrs.status.history.has_changes() or state.attrs.priority.history.has_changes()


def _row_keys(row: object, *, new_or_deleted: bool) -> tuple[str, ...]:
    if isinstance(row, Job):
        moved = new_or_deleted or _moved_in_queue(row)
        return (job_key(row.id), JOBS, QUEUE) if moved else (job_key(row.id), JOBS)
    if isinstance(row, JobTag):
        return (job_key(row.job_id), JOBS)
    if isinstance(row, CycleResultRow):
        return (job_key(row.job_id),)
    if isinstance(row, Study):
        return (study_key(row.id), STUDIES)
    if isinstance(row, ApiToken):
        return (user_key(row.user_id),)
    if isinstance(row, User):
        return (user_key(row.id), JOBS, STUDIES)  # lists show owners' names
    return ()


def _after_flush(session: Session, _context: Any) -> None:
    keys: set[str] = set()
    for row in session.new:
        keys.update(_row_keys(row, new_or_deleted=True))
    for row in session.deleted:
        keys.update(_row_keys(row, new_or_deleted=True))
    for row in session.dirty:
        if session.is_modified(row):
            keys.update(_row_keys(row, new_or_deleted=False))
    if keys:
        announce(session, keys)


def _before_commit(session: Session) -> None:
    session.flush()  # the commit's own flush comes after this hook: collect its keys now
    keys = session.info.get(_KEYS)
    if keys and session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_notify(CHANNEL, encode(keys))))


def _after_commit(session: Session) -> None:
    keys = session.info.pop(_KEYS, set()) | session.info.pop(_NOTIFIED, set())
    if keys:
        publish_here(keys)


def _after_rollback(session: Session) -> None:
    session.info.pop(_KEYS, None)
    session.info.pop(_NOTIFIED, None)


def track(factory: sessionmaker) -> None:
    """Track the changes of every session ``factory`` makes."""
    event.listen(factory, "after_flush", _after_flush)
    event.listen(factory, "before_commit", _before_commit)
    event.listen(factory, "after_commit", _after_commit)
    event.listen(factory, "after_rollback", _after_rollback)
