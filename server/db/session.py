"""Engines and sessions for SQLite (embedded default) and PostgreSQL (teams)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import sessionmaker

from server.changes.tracking import track


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets status polls read while a report writes; foreign keys are off by
    # default in SQLite; the busy timeout turns lock contention into waiting.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # In WAL mode NORMAL syncs the log at checkpoints, not at every commit: a
    # commit survives the process crashing, and a power cut leaves the database
    # consistent but may lose its last commits. FULL's sync per commit was a
    # third of a submit's time on SQLite (bench/submit_profile.py).
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def is_sqlite(url: str) -> bool:
    """Whether ``url`` is a SQLite database (the embedded default)."""
    return make_url(url).get_backend_name() == "sqlite"


def make_engine(url: str, *, pool_size: int = 5) -> Engine:
    """An engine for ``url``; a SQLite file's folder is created if needed.

    ``pool_size`` (PostgreSQL) should cover the requests served at once: a
    connection over it is closed when returned and opened anew next time, which
    costs the database a new backend process each time.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    # No pool_pre_ping: it costs a round trip on every request. After a database
    # restart the first statement on a stale connection fails as a disconnect;
    # SQLAlchemy then invalidates the whole pool, that one request answers 503
    # (clients retry on Retry-After) and the next ones reconnect.
    return create_engine(url, pool_size=pool_size, max_overflow=pool_size)


def make_session_factory(engine: Engine, *, read_only: bool = False) -> sessionmaker:
    """Sessions on ``engine``; ``read_only`` ones run each statement in autocommit.

    A request that only reads needs no transaction: autocommit saves the BEGIN
    and ROLLBACK round trips, a third of a status poll's time on PostgreSQL.
    Every session's commits are tracked (server/changes/tracking.py), so the
    answers the API remembers learn what changed.
    """
    if read_only:
        engine = engine.execution_options(isolation_level="AUTOCOMMIT")
    factory = sessionmaker(engine, expire_on_commit=False)
    track(factory)
    return factory
