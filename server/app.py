"""The FastAPI application: lifespan, middleware, error shape, health, metrics, dashboard."""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import func, select, text
from starlette.concurrency import run_in_threadpool

from server.api.conditional import Answers
from server.api.deps import SessionDep, authenticate, bearer_token, user_bearer
from server.api.errors import ApiError, error_response, install_error_handlers
from server.api.follow import JobWatcher
from server.api.openapi import install_openapi
from server.auth.tokens import TokenCache, create_user_token
from server.changes import tracking
from server.changes.book import ChangeBook
from server.changes.listener import ChangeListener
from server.db.migrate import SchemaBehindError, check_schema, upgrade
from server.db.models import User
from server.db.session import is_sqlite, make_engine, make_session_factory
from server.limits import BodySizeLimit, HeaderSizeLimit
from server.methods import MethodSemantics
from server.metrics import Metrics
from server.settings import Settings, get_settings
from server.web import install_dashboard

log = logging.getLogger("silo.server")

STREAM_POLL_SECONDS = 0.5  # how often followed jobs are looked at (server/api/follow.py)


def prepare_database(settings: Settings) -> None:
    """Embedded SQLite may upgrade itself; anything else must already be current."""
    url = settings.resolved_database_url()
    engine = make_engine(url)
    try:
        if is_sqlite(url) and settings.auto_upgrade_sqlite:
            upgrade(url)
        check_schema(engine)
    finally:
        engine.dispose()


def ensure_local_admin_token(settings: Settings, factory: object) -> Path | None:
    """On an empty embedded database, create an admin token and keep it in a 0600 file."""
    path = settings.data_dir / "admin-token"
    with factory.begin() as session:  # type: ignore[attr-defined]
        if session.scalar(select(func.count()).select_from(User)):
            return None
        token = create_user_token(session, "admin", admin=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    return path


class ChangeTracking:
    """The process's news of changes for one app: its book, fed by this process's
    commits and, on PostgreSQL, by the listener; and the answers it remembers."""

    def __init__(self, app: FastAPI, url: str) -> None:
        sqlite = is_sqlite(url)
        # SQLite: this process is the database's one writer; its commits are all the news.
        self.book = ChangeBook(trusted=sqlite)
        self.listener = None if sqlite else ChangeListener(url, self.book)
        token_cache: TokenCache = app.state.token_cache
        self.book.observe(token_cache.forget_changed)
        app.state.watcher.on_close(self.book.close)
        app.state.answers = Answers(self.book)
        app.state.changes = self.book

    def start(self) -> None:
        tracking.register(self.book)
        if self.listener is not None:
            self.listener.start()

    def stop(self) -> None:
        tracking.unregister(self.book)
        self.book.close()
        if self.listener is not None:
            self.listener.stop()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        prepare_database(settings)  # raises SchemaBehindError: the server does not start
        engine = make_engine(
            settings.resolved_database_url(), pool_size=settings.database_pool_size
        )
        app.state.engine = engine
        app.state.session_factory = make_session_factory(engine)
        app.state.read_session_factory = make_session_factory(engine, read_only=True)
        app.state.token_cache = TokenCache(settings.token_cache_seconds)
        app.state.watcher = JobWatcher(
            app.state.read_session_factory,
            interval=STREAM_POLL_SECONDS,
            per_user=settings.max_streams_per_user,
        )
        app.state.watcher.start()
        changes = ChangeTracking(app, settings.resolved_database_url())
        changes.start()
        if is_sqlite(settings.resolved_database_url()):
            made = ensure_local_admin_token(settings, app.state.session_factory)
            if made:
                log.warning("created a local admin token; it is stored in %s", made)
        # Everything imported so far (torch included) lives as long as the
        # process: keep it out of the collector's full passes, which otherwise
        # stall every request for a quarter of a second now and then.
        gc.freeze()
        yield
        await app.state.watcher.stop()
        changes.stop()
        engine.dispose()

    app = FastAPI(
        title="SILO pruning service",
        version="1",
        lifespan=lifespan,
        docs_url="/docs",
    )
    app.state.settings = settings
    app.state.metrics = metrics
    install_error_handlers(app)
    app.add_middleware(metrics.middleware)
    app.add_middleware(
        BodySizeLimit,
        max_bytes=settings.max_request_bytes,
        streamed={"/v1/files": settings.max_upload_bytes},  # uploads: server/api/files.py
    )
    app.add_middleware(HeaderSizeLimit, max_bytes=settings.max_header_bytes)
    app.add_middleware(MethodSemantics, router_app=app)

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    def readyz(session: SessionDep) -> JSONResponse:
        """The database answers and its schema is current."""
        try:
            session.execute(text("SELECT 1"))
            check_schema(session.get_bind())  # type: ignore[arg-type]
        except SchemaBehindError as exc:
            return error_response(503, "schema_behind", str(exc))
        return JSONResponse({"status": "ready"})

    @app.get("/metrics", tags=["health"], include_in_schema=False)
    async def metrics_endpoint(request: Request, session: SessionDep) -> object:
        """Prometheus metrics; SILO_METRICS_ACCESS says who may read them."""
        access = request.app.state.settings.metrics_access
        if access != "open":
            credentials = await user_bearer(request)
            user = await authenticate(request, bearer_token(credentials))
            if access == "admin" and not user.is_admin:
                raise ApiError(403, "forbidden", "metrics are for admins (SILO_METRICS_ACCESS)")
        return await run_in_threadpool(metrics.render, session)

    from server.api import routers

    for router in routers():
        app.include_router(router)
    install_dashboard(app)
    install_openapi(app)
    return app
