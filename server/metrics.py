"""Prometheus metrics: request latency (middleware) and job counts (read at scrape)."""

from __future__ import annotations

import time

from fastapi import Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Gauge,
    Histogram,
    generate_latest,
)
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.db.models import Job
from silo_contract.status import JobStatus


class Metrics:
    """One registry per app, so several apps in one process (tests) stay apart."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.latency = Histogram(
            "silo_http_request_seconds",
            "HTTP request latency",
            ["method", "route", "status"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )
        self.jobs = Gauge("silo_jobs", "Jobs by status", ["status"], registry=self.registry)
        self.queue = Gauge("silo_queue_length", "Queued jobs", registry=self.registry)

    def middleware(self, app: ASGIApp) -> ASGIApp:
        """ASGI middleware timing every HTTP request by route template and status.

        Plain ASGI rather than BaseHTTPMiddleware, which costs a task and a
        memory stream per request: a third of a status poll's time.
        """

        async def timed(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            started = time.perf_counter()
            status = 500

            async def send_and_note_status(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                await send(message)

            try:
                await app(scope, receive, send_and_note_status)
            finally:
                # The route template, not the raw path, keeps the label set small.
                path = getattr(scope.get("route"), "path", "unmatched")
                self.latency.labels(scope["method"], path, str(status)).observe(
                    time.perf_counter() - started
                )

        return timed

    def render(self, session: Session) -> Response:
        counts = dict(session.execute(select(Job.status, func.count()).group_by(Job.status)).all())
        for status in JobStatus:
            self.jobs.labels(status.value).set(counts.get(status.value, 0))
        self.queue.set(counts.get(JobStatus.QUEUED.value, 0))
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)
