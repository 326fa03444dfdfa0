"""Shared fixtures: a SQLite file and a fresh PostgreSQL database, and the real
API under uvicorn.

The PostgreSQL database is created for the test session and dropped after it.
PostgreSQL must be reachable (./dev test starts the local cluster); when it is
not, the tests that need it fail with the reason instead of being skipped.
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from plugin_dists import write_team_plugins
from servers import LiveServer, free_port
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

PG_ADMIN_URL = os.environ.get(
    "SILO_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


@pytest.fixture(scope="session")
def plugin_folder(tmp_path_factory) -> Path:
    """The tests' plug-in distributions (tests/plugin_dists.py), one folder for the
    session: the local Ray head's workers have it on their PYTHONPATH."""
    return write_team_plugins(tmp_path_factory.mktemp("plugins"))


@pytest.fixture
def team_plugins(plugin_folder: Path, monkeypatch) -> Iterator[Path]:
    """The tests' plug-ins installed in this process for one test."""
    from silo_core import plugins

    monkeypatch.syspath_prepend(str(plugin_folder))
    plugins.refresh()
    yield plugin_folder
    plugins.refresh()  # reread once the path is restored


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    name = f"silo_test_{uuid.uuid4().hex[:12]}"
    # pre-ping: a test restarts PostgreSQL, and the drop at the end must still work.
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        pytest.fail(f"PostgreSQL is not usable at {PG_ADMIN_URL}: {exc}", pytrace=False)
    yield make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database_url(request, tmp_path) -> Iterator[str]:
    """An empty database of each kind (PostgreSQL: a schema reset per test)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'silo.db'}"
        return
    url = request.getfixturevalue("postgres_url")
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    engine.dispose()
    yield url


@pytest.fixture(scope="session")
def sqlite_at_head(tmp_path_factory) -> Path:
    """A SQLite file migrated to head once per session, for tests to copy."""
    from server.db.migrate import upgrade

    path = tmp_path_factory.mktemp("sqlite-at-head") / "silo.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture
def database_url(empty_database_url: str, request) -> str:
    """A database of each kind with the schema at head. SQLite's is a copy of one
    migrated once (running every migration per test cost a third of a second)."""
    from server.db.migrate import upgrade

    url = make_url(empty_database_url)
    if url.get_backend_name() == "sqlite":
        # The backup API copies a consistent database whatever its WAL holds.
        with (
            sqlite3.connect(request.getfixturevalue("sqlite_at_head")) as source,
            sqlite3.connect(url.database) as copy,
        ):
            source.backup(copy)
    else:
        upgrade(empty_database_url)
    return empty_database_url


@pytest.fixture
def sessions(database_url: str) -> Iterator:
    """A session factory on the test's migrated database (no server)."""
    from server.db.session import make_engine, make_session_factory

    engine = make_engine(database_url)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture
def live_settings() -> dict:
    """Settings the live server is made with beyond the tests' defaults; a test
    parametrizes ``live_settings`` to change them (``max_streams_per_user``, ...)."""
    return {}


@pytest.fixture
def live_server(request, database_url: str, tmp_path, live_settings: dict) -> Iterator[LiveServer]:
    """The live server; parametrize it indirectly with "h11" or "httptools" to
    choose uvicorn's HTTP implementation (default: auto)."""
    from server.app import create_app
    from server.auth.tokens import create_user_token
    from server.db.session import make_engine, make_session_factory
    from server.settings import Settings

    engine = make_engine(database_url)
    tokens: dict[str, str] = {}
    with make_session_factory(engine).begin() as session:
        for name, admin in (("alice", False), ("bob", False), ("root", True)):
            tokens[name] = create_user_token(session, name, admin=admin)
    engine.dispose()
    settings = Settings(
        database_url=database_url,
        data_dir=tmp_path / "data",
        max_request_bytes=64 * 1024,
        **live_settings,
    )
    http = getattr(request, "param", "auto")
    server = LiveServer(create_app(settings), free_port(), tokens, database_url, settings, http)
    server.start()
    yield server
    server.stop()
