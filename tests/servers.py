"""The real app under uvicorn for tests: ``LiveServer`` and a free port.

Importable as ``servers`` from any test (tests/ is on sys.path); the
``live_server`` fixture in tests/conftest.py is built on it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest


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


@contextmanager
def database_session(live_server: LiveServer) -> Iterator:
    """A session on the live server's database, committed when the block ends."""
    from server.db.session import make_engine, make_session_factory

    engine = make_engine(live_server.database_url)
    try:
        with make_session_factory(engine).begin() as session:
            yield session
    finally:
        engine.dispose()
