"""Submits on SQLite: one writer at a time, every submit waiting then in one commit.

SQLite takes one writer at a time. Under a burst of submits each one used to
wait for the write lock, write its job (nine indexes) and tags, and commit on
its own: the commit wrote a dozen pages to the log for one job, and the
statements went through SQLAlchemy's execution machinery, together about as
much of the process's time as the rest of the request (bench/submit_profile.py).
Here the submits of a process meet in a queue instead. Whoever takes the
writer's lock writes every submit queued by then in one transaction and one
commit (a group commit, as databases do with their logs): the jobs of a burst
share the index pages they touch, and the commit writes those pages once. The
others find their job written when the lock comes to them and go on.

The writer's statements are SQLAlchemy's own (server/jobs/repository.py's,
compiled once here for SQLite, with the columns' own bind processors), sent
through the driver connection: on this path SQLAlchemy's per-statement work
cost more than SQLite's (bench/submit_profile.py). Driver errors become
SQLAlchemy's exceptions, so callers see what a session would have raised.

A writer in another process still meets these at SQLite's busy timeout
(server/db/session.py).
"""

from __future__ import annotations

import sqlite3
import threading
import weakref
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy import Dialect, Engine, Executable, bindparam, exc, insert

from server.changes.book import new_job_keys
from server.changes.tracking import publish_here
from server.db.models import JobTag

# A bound on one transaction: a larger burst commits in several.
MAX_BATCH = 64


class Written(NamedTuple):
    """A submit's job as written: its id, its owner's name, the queued jobs ahead."""

    id: int
    owner: str
    ahead: int


@dataclass(frozen=True)
class SubmitStatements:
    """What a submit writes, as SQLAlchemy statements (server/jobs/repository.py's):
    the job's insert returning its id and owner's name (``keyed``: nothing
    inserted when the owner used the idempotency key before), given values
    for ``columns``; the count of queued jobs ahead of ``:job_id``."""

    insert_job: dict[bool, Any]  # keyed -> Insert
    columns: Sequence[str]
    count_ahead: Executable


class _Compiled:
    """A statement compiled once for a dialect, with what turns values into its
    parameters: the columns' bind processors, and the defaults of columns not
    ``given`` (scalar ones only, filled in as SQLAlchemy would)."""

    def __init__(self, statement: Any, dialect: Dialect, given: Collection[str] = ()) -> None:
        compiled = statement.compile(dialect=dialect)
        self.sql = str(compiled)
        self.names: tuple[str, ...] = tuple(compiled.positiontup or ())
        self._processors: dict[str, Callable[[Any], Any]] = {}
        self._defaults: dict[str, Any] = {}
        table = getattr(statement, "table", None)  # an insert's; a text has none
        columns: Any = {} if table is None else table.c
        for name in self.names:
            column = columns.get(name)
            if column is None:
                continue
            processor = column.type.dialect_impl(dialect).bind_processor(dialect)
            if processor is not None:
                self._processors[name] = processor
            if column.default is not None and name not in given:
                if not column.default.is_scalar:
                    raise TypeError(f"{column}: only a scalar default is filled in")
                self._defaults[name] = column.default.arg

    def parameters(self, values: dict[str, Any]) -> tuple[Any, ...]:
        merged = {**self._defaults, **values}
        processors = self._processors
        return tuple(
            processor(merged[name]) if (processor := processors.get(name)) else merged[name]
            for name in self.names
        )


class _Statements:
    def __init__(self, statements: SubmitStatements, dialect: Dialect) -> None:
        columns: dict[str, Any] = {name: bindparam(name) for name in statements.columns}
        self.insert_job = {
            keyed: _Compiled(insert.values(columns), dialect, columns)
            for keyed, insert in statements.insert_job.items()
        }
        tag = insert(JobTag).values(job_id=bindparam("job_id"), tag=bindparam("tag"))
        self.insert_tag = _Compiled(tag, dialect)
        self.count_ahead = _Compiled(statements.count_ahead, dialect)


@dataclass(eq=False)
class _Submit:
    values: dict[str, Any]
    tags: Sequence[str]
    keyed: bool
    done: bool = False
    written: Written | None = None  # None once done: the key was used before
    error: BaseException | None = None


class GroupCommit:
    """The submits of one process to one SQLite database."""

    def __init__(self, engine: Engine, statements: SubmitStatements) -> None:
        self._engine = engine
        self._statements = _Statements(statements, engine.dialect)
        self._queue: list[_Submit] = []
        self._queue_lock = threading.Lock()  # held for a list operation only
        self._writer = threading.Lock()  # held while a batch is written

    def submit(self, values: dict[str, Any], tags: Sequence[str], *, keyed: bool) -> Written | None:
        """Write the job ``values`` with ``tags`` and commit. None: ``keyed``
        and the owner used the idempotency key before; nothing was written."""
        mine = _Submit(values, tags, keyed)
        with self._queue_lock:
            self._queue.append(mine)
        with self._writer:
            if not mine.done:  # else an earlier holder wrote it
                with self._queue_lock:
                    batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                self._write(batch)
        assert mine.done, "a batch leaves none of its submits undone"
        if mine.error is not None:
            raise mine.error
        return mine.written

    def _write(self, batch: list[_Submit]) -> None:
        try:
            written = self._transaction(batch)
        except exc.IntegrityError as error:
            if len(batch) == 1:
                _finish(batch, error)
            else:  # one job's fault (its owner deleted since): each alone finds whose
                for submit in batch:
                    self._write([submit])
            return
        except Exception as error:  # the database locked or gone: every submit says so
            _finish(batch, error)
            return
        # This process's answers learn of the new jobs (SQLite has no other).
        publish_here({key for row in written if row is not None for key in new_job_keys(row.id)})
        for submit, row in zip(batch, written, strict=True):
            submit.written, submit.done = row, True

    def _transaction(self, batch: list[_Submit]) -> list[Written | None]:
        statements = self._statements
        connection = self._engine.raw_connection()
        try:
            driver = connection.driver_connection
            assert driver is not None
            written: list[Written | None] = []
            try:
                # IMMEDIATE: the write lock at once, so that SQLite's busy
                # timeout, not a failed upgrade from reading, decides a wait.
                driver.execute("BEGIN IMMEDIATE")
                for submit in batch:
                    written.append(self._insert(driver, statements, submit))
                driver.commit()
            except sqlite3.Error as error:
                driver.rollback()
                raise exc.DBAPIError.instance(
                    "a batch of submits", None, error, sqlite3.Error
                ) from None
            return written
        finally:
            connection.close()

    @staticmethod
    def _insert(driver: Any, statements: _Statements, submit: _Submit) -> Written | None:
        job = statements.insert_job[submit.keyed]
        row = driver.execute(job.sql, job.parameters(submit.values)).fetchone()
        if row is None:
            return None
        job_id, owner = row
        tag = statements.insert_tag
        driver.executemany(
            tag.sql, [tag.parameters({"job_id": job_id, "tag": t}) for t in submit.tags]
        )
        # The place is counted inside the transaction, as a read right after
        # the commit would count it: the batch's earlier jobs are ahead.
        count = statements.count_ahead
        (ahead,) = driver.execute(count.sql, count.parameters({"job_id": job_id})).fetchone()
        return Written(job_id, owner, ahead or 0)


def _finish(batch: list[_Submit], error: BaseException) -> None:
    for submit in batch:
        submit.error, submit.done = error, True


_writers: weakref.WeakKeyDictionary[Engine, GroupCommit] = weakref.WeakKeyDictionary()
_writers_lock = threading.Lock()


def group_commit(engine: Engine, statements: SubmitStatements) -> GroupCommit:
    """The process's one GroupCommit for ``engine``."""
    with _writers_lock:
        found = _writers.get(engine)
        if found is None:
            found = _writers[engine] = GroupCommit(engine, statements)
        return found
