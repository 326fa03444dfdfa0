"""Following jobs (event streams, followed logs) without holding database connections.

A stream spends its life waiting. Each stream polling the database on its
own made a thousand open streams two thousand queries a second, and a stream
that kept its request's session held a pooled connection for as long as it
was open, until the status polls found the pool empty. Instead one
``JobWatcher`` per process reads, every ``interval`` seconds, the state of
every followed job in one statement, and the size of every followed log
file, on one worker thread, and wakes the streams whose job or file changed.
A waiting stream holds no connection and no thread; it reads (events, log
bytes) only when woken.

Each user holds at most ``per_user`` streams at once; one more is a 429.

A stream lasts as long as its job, so a stopping server would wait for every
followed job to end before it could stop. The server closes the watcher as
it starts to stop (server/serving.py): every stream then sends what it has
and ends, and the server stops at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi.responses import StreamingResponse
from sqlalchemy import bindparam, select
from sqlalchemy.orm import sessionmaker
from starlette.concurrency import run_in_threadpool
from starlette.types import Receive, Scope, Send

from server.api.errors import ApiError
from server.db.models import Job

log = logging.getLogger("silo.api.follow")

RETRY_AFTER_SECONDS = 5
_CHUNK = 5000  # job ids per statement


@dataclass(frozen=True)
class JobState:
    """What a stream needs to know changed: None status means the job is gone."""

    status: str | None
    attempt: int = 0
    event_seq: int = 0


GONE = JobState(None)
_STATES = select(Job.id, Job.status, Job.attempt, Job.event_seq).where(
    Job.id.in_(bindparam("ids", expanding=True))
)


class Follow:
    """One stream's subscription: ``wait`` returns when its job or file changed."""

    def __init__(self, job_id: int, path: Path | None) -> None:
        self.job_id, self.path = job_id, path
        self.state: JobState | None = None  # None until the first read: that read wakes it
        self.size: int | None = None
        self.closed = False  # the server is stopping: end the stream
        self._changed = asyncio.Event()

    def update(self, state: JobState, size: int | None) -> None:
        if state != self.state or size != self.size:
            self.state, self.size = state, size
            self._changed.set()

    def close(self) -> None:
        self.closed = True
        self._changed.set()

    async def wait(self, timeout: float) -> bool:
        """True when something changed (or the follow was closed), False after
        ``timeout`` seconds without change."""
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
        except TimeoutError:
            return False
        self._changed.clear()
        return True


class JobWatcher:
    def __init__(self, sessions: sessionmaker, *, interval: float, per_user: int) -> None:
        self.sessions, self.interval, self.per_user = sessions, interval, per_user
        self._follows: set[Follow] = set()
        self._streams: Counter[int] = Counter()
        # The stream routes run on worker threads and the releases on the event
        # loop: the count is read and written under this lock only.
        self._streams_lock = threading.Lock()
        self._task: asyncio.Task[None] | None = None
        self.closing = False
        self._on_close: list[Callable[[], None]] = []

    # --- lifetime (the app's lifespan) ------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="job-watcher")

    def close(self) -> None:
        """End every stream, now and from now on: the server is stopping."""
        if self.closing:
            return
        self.closing = True
        for follow in self._follows:
            follow.close()
        for hook in self._on_close:
            hook()

    def on_close(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` too when the server starts to stop (the watches end with the streams)."""
        self._on_close.append(hook)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    # --- streams ------------------------------------------------------------------

    def reserve(self, user_id: int) -> Callable[[], None]:
        """Count one more open stream for ``user_id`` (429 past the limit); returns
        the release, which may be called more than once."""
        with self._streams_lock:
            if self._streams[user_id] >= self.per_user:
                raise ApiError(
                    429,
                    "too_many_streams",
                    f"at most {self.per_user} event streams and followed logs per user are "
                    "open at once; close one, or poll",
                    {"limit": self.per_user},
                    headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
                )
            self._streams[user_id] += 1
        released = False

        def release() -> None:
            nonlocal released
            with self._streams_lock:
                if not released:
                    released = True
                    self._streams[user_id] -= 1
                    if self._streams[user_id] <= 0:
                        del self._streams[user_id]

        return release

    def open_streams(self, user_id: int | None = None) -> int:
        """Streams open now: ``user_id``'s, or everyone's."""
        with self._streams_lock:
            return self._streams[user_id] if user_id is not None else self._streams.total()

    @contextlib.asynccontextmanager
    async def follow(self, job_id: int, path: Path | None = None) -> AsyncIterator[Follow]:
        follow = Follow(job_id, path)
        if self.closing:
            follow.close()
        self._follows.add(follow)
        try:
            yield follow
        finally:
            self._follows.discard(follow)

    # --- the one poller ---------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            follows = list(self._follows)
            if not follows:
                continue
            job_ids = {follow.job_id for follow in follows}
            paths = {follow.path for follow in follows if follow.path is not None}
            try:
                states, sizes = await run_in_threadpool(self._read, job_ids, paths)
            except Exception as exc:  # the database away: the streams wait, pinging
                log.warning("cannot read the followed jobs' states: %s", exc)
                continue
            for follow in follows:
                size = sizes.get(follow.path) if follow.path is not None else None
                follow.update(states.get(follow.job_id, GONE), size)

    def _read(
        self, job_ids: set[int], paths: set[Path]
    ) -> tuple[dict[int, JobState], dict[Path, int | None]]:
        states: dict[int, JobState] = {}
        ordered = sorted(job_ids)
        with self.sessions() as session:
            for start in range(0, len(ordered), _CHUNK):
                rows = session.execute(_STATES, {"ids": ordered[start : start + _CHUNK]})
                for job_id, status, attempt, event_seq in rows:
                    states[job_id] = JobState(status, attempt, event_seq)
        sizes: dict[Path, int | None] = {}
        for path in paths:
            try:
                sizes[path] = os.stat(path).st_size
            except OSError:
                sizes[path] = None
        return states, sizes


class StreamResponse(StreamingResponse):
    """A streaming response that gives its stream slot back however it ends
    (finished, client gone, cancelled, or never started)."""

    def __init__(
        self,
        content: Any,
        release: Callable[[], None],
        status_code: int = 200,
        headers: dict[str, str] | None = None,
        media_type: str | None = None,
    ) -> None:
        super().__init__(content, status_code, headers, media_type)
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()
