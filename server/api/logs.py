"""A job's log: what its workers logged, attempt by attempt, optionally followed.

Each attempt's worker writes ``worker.log`` under the artifact root (the
folder the API and the workers share, see workers/attempt.py); the API reads
it from there. Plain text, so ``curl`` and ``silo logs`` show it as it is.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool

from server.api.access import ReaderDep
from server.api.deps import SessionDep
from server.api.errors import ApiError, documented
from server.api.follow import JobWatcher, StreamResponse
from server.api.jobs import load_job
from server.api.params import JobId
from server.api.routing import ApiRoute
from silo_contract.fields import MAX_INT
from silo_contract.layout import attempt_log
from silo_contract.status import is_terminal

router = APIRouter(prefix="/v1", tags=["jobs"], route_class=ApiRoute, responses=documented(401))

CHUNK = 64 * 1024
FINAL_LINES_SECONDS = 1.0
IDLE_SECONDS = 60.0  # a silent log is read again this often, whatever the watcher says
STOPPING = b"=== the server is stopping; follow the log again to go on ===\n"


def _header(attempt: int) -> bytes:
    return f"=== attempt {attempt} ===\n".encode()


def _read_from(path: Path, offset: int) -> bytes:
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            return handle.read(CHUNK)
    except FileNotFoundError:
        return b""


async def _read_out(path: Path, offset: int) -> AsyncIterator[bytes]:
    """What the file holds past ``offset``, a chunk at a time."""
    while chunk := await run_in_threadpool(_read_from, path, offset):
        offset += len(chunk)
        yield chunk


async def _lines(
    watcher: JobWatcher | None, root: str, job_id: int, attempts: list[int]
) -> AsyncIterator[bytes]:
    """The logs of ``attempts`` in order; with a ``watcher``, go on with the newest
    attempt (and any later one) until the job is final and its log read out."""
    path, offset = attempt_log(root, job_id, 0), 0
    for attempt in attempts:
        yield _header(attempt)
        path, offset = attempt_log(root, job_id, attempt), 0
        async for chunk in _read_out(path, offset):
            offset += len(chunk)
            yield chunk
    if watcher is None:
        return
    current = attempts[-1] if attempts else 0
    async with watcher.follow(job_id, path) as follow:
        while True:
            await follow.wait(timeout=IDLE_SECONDS)
            state = follow.state  # read before the file: its lines up to then are in
            async for chunk in _read_out(path, offset):
                offset += len(chunk)
                yield chunk
            if follow.closed:
                yield STOPPING
                return
            if state is None:
                continue
            while state.attempt > current:
                current, offset = current + 1, 0
                path = follow.path = attempt_log(root, job_id, current)
                yield _header(current)
                async for chunk in _read_out(path, offset):
                    offset += len(chunk)
                    yield chunk
            if state.status is None or is_terminal(state.status):
                # The worker's last lines follow its final report by a moment.
                await follow.wait(timeout=FINAL_LINES_SECONDS)
                async for chunk in _read_out(path, offset):
                    yield chunk
                return


@router.get(
    "/jobs/{job_id}/logs",
    response_class=StreamResponse,
    responses={200: {"content": {"text/plain": {}}}, **documented(429)},
)
def job_logs(
    job_id: JobId,
    request: Request,
    session: SessionDep,
    reader: ReaderDep,
    attempt: Annotated[int | None, Query(ge=1, le=MAX_INT, description="One attempt only")] = None,
    follow: Annotated[bool, Query(description="Keep streaming until the job ends")] = False,
) -> StreamResponse:
    """The job's log lines, attempt by attempt (tracebacks of failures included)."""
    job = load_job(session, job_id, reader)
    if attempt is not None and attempt > job.attempt:
        raise ApiError(
            404,
            "not_found",
            f"attempt: job {job_id} has {job.attempt} attempt(s) so far",
            [{"field": "attempt", "message": f"at most {job.attempt}"}],
        )
    attempts = [attempt] if attempt is not None else list(range(1, job.attempt + 1))
    follow = follow and (attempt is None or attempt == job.attempt)
    session.close()  # a followed log holds no connection while it waits
    root = request.app.state.settings.resolved_artifact_root()
    watcher: JobWatcher = request.app.state.watcher
    release = watcher.reserve(reader.user.id) if follow else (lambda: None)
    return StreamResponse(
        _lines(watcher if follow else None, root, job_id, attempts),
        release,
        media_type="text/plain; charset=utf-8",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
