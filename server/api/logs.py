"""A job's log: what its workers logged, attempt by attempt, optionally followed.

Each attempt's worker writes ``worker.log`` under the artifact root (the
folder the API and the workers share, see workers/attempt.py); the API reads
it from there. Plain text, so ``curl`` and ``silo logs`` show it as it is.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import sessionmaker
from starlette.concurrency import run_in_threadpool

from server.api.deps import SessionDep, UserDep
from server.api.errors import ApiError, not_found
from server.jobs import repository as repo
from workers.attempt import attempt_log

router = APIRouter(prefix="/v1", tags=["jobs"])

FOLLOW_POLL_SECONDS = 0.5
CHUNK = 64 * 1024


def _header(attempt: int) -> bytes:
    return f"=== attempt {attempt} ===\n".encode()


def _read_from(path: Path, offset: int) -> bytes:
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            return handle.read(CHUNK)
    except FileNotFoundError:
        return b""


def _state(factory: sessionmaker, job_id: int) -> tuple[str | None, int]:
    with factory() as session:
        job = repo.get_job(session, job_id)
        return (job.status, job.attempt) if job else (None, 0)


async def _lines(
    factory: sessionmaker, root: str, job_id: int, attempts: list[int], follow: bool
) -> AsyncIterator[bytes]:
    """The logs of ``attempts`` in order; with ``follow``, go on with the newest
    attempt (and any later one) until the job is final and its log read out."""
    offset = 0
    for attempt in attempts:
        yield _header(attempt)
        path, offset = attempt_log(root, job_id, attempt), 0
        while chunk := await run_in_threadpool(_read_from, path, offset):
            offset += len(chunk)
            yield chunk
    if not follow:
        return
    current = attempts[-1] if attempts else 0
    path = attempt_log(root, job_id, current)
    while True:
        status, newest = await run_in_threadpool(_state, factory, job_id)
        # Read after the status: a final status means the last lines are written.
        while chunk := await run_in_threadpool(_read_from, path, offset):
            offset += len(chunk)
            yield chunk
        if newest > current:
            current, offset = current + 1, 0
            path = attempt_log(root, job_id, current)
            yield _header(current)
            continue
        if status is None or repo.is_terminal(status):
            return
        await asyncio.sleep(FOLLOW_POLL_SECONDS)


@router.get(
    "/jobs/{job_id}/logs",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/plain": {}}}},
)
def job_logs(
    job_id: int,
    request: Request,
    session: SessionDep,
    user: UserDep,
    attempt: Annotated[int | None, Query(ge=1, description="One attempt only")] = None,
    follow: Annotated[bool, Query(description="Keep streaming until the job ends")] = False,
) -> StreamingResponse:
    """The job's log lines, attempt by attempt (tracebacks of failures included)."""
    job = repo.get_job(session, job_id)
    if job is None:
        raise not_found("job")
    if attempt is not None and attempt > job.attempt:
        raise ApiError(
            404,
            "not_found",
            f"attempt: job {job_id} has {job.attempt} attempt(s) so far",
            [{"field": "attempt", "message": f"at most {job.attempt}"}],
        )
    attempts = [attempt] if attempt is not None else list(range(1, job.attempt + 1))
    root = request.app.state.settings.resolved_artifact_root()
    factory = request.app.state.read_session_factory
    follow = follow and (attempt is None or attempt == job.attempt)
    return StreamingResponse(
        _lines(factory, root, job_id, attempts, follow),
        media_type="text/plain; charset=utf-8",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
