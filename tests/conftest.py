"""Shared fixtures: a SQLite file and a fresh PostgreSQL database, and the real
API under uvicorn.

The PostgreSQL database is created for the test session and dropped after it.
PostgreSQL must be reachable (./dev test starts the local cluster); when it is
not, the tests that need it fail with the reason instead of being skipped.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

PG_ADMIN_URL = os.environ.get(
    "SILO_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


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


@pytest.fixture
def database_url(empty_database_url: str) -> str:
    """A database of each kind with the schema at head."""
    from server.db.migrate import upgrade

    upgrade(empty_database_url)
    return empty_database_url


class LiveServer:
    """The real app under uvicorn on a free port, with a few users' tokens.

    ``stop()`` and ``start()`` take the API away and bring it back on the same
    port (same database), as a restart of the server process would. uvicorn is
    configured as `silo serve` configures it (``server.serving.uvicorn_config``),
    with ``http`` its HTTP implementation.
    """

    def __init__(
        self,
        app,
        port: int,
        tokens: dict[str, str],
        database_url: str,
        settings=None,
        http: str = "auto",
    ) -> None:
        self.app, self.port, self.tokens, self.database_url = app, port, tokens, database_url
        self.settings, self.http = settings or app.state.settings, http
        self.base_url = f"http://127.0.0.1:{port}"
        self._server = None
        self._thread = None

    def start(self) -> None:
        import threading
        import time

        import uvicorn

        from server.serving import uvicorn_config

        config = uvicorn_config(
            self.app,
            self.settings,
            host="127.0.0.1",
            port=self.port,
            http=self.http,
            log_level="warning",
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                pytest.fail("the API server did not start", pytrace=False)
            time.sleep(0.02)

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
            self._server = None

    def client(self, user: str | None = "alice", **kwargs):
        import httpx

        headers = {"Authorization": f"Bearer {self.tokens[user]}"} if user else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=30, **kwargs)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
