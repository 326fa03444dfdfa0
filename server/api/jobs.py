"""Jobs: submit, list, read, cancel, retry, events, cycles, artifacts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import FileResponse, StreamingResponse
from pydantic import BaseModel
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from server.api import job_out
from server.api.deps import SessionDep, SettingsDep, UserDep, require_owner_or_admin
from server.api.errors import ApiError, not_found
from server.db.models import Job, JobEvent
from server.jobs import repository as repo
from server.jobs import views
from server.jobs.cluster import refuse_unfit
from server.jobs.states import IllegalTransitionError, JobStatus
from silo_client.models import (
    ArtifactList,
    ArtifactOut,
    CycleList,
    CycleOut,
    EventOut,
    EventPage,
    JobOut,
    JobPage,
    JobSubmit,
)
from silo_core.spec import JobSpec, SpecError, parse_spec

router = APIRouter(prefix="/v1", tags=["jobs"])

STREAM_POLL_SECONDS = 0.5
STREAM_KEEPALIVE_SECONDS = 15.0
STREAM_BATCH = 500
MAX_IDEMPOTENCY_KEY = 200


# --- helpers ----------------------------------------------------------------


def _load(session: Session, job_id: int, *, for_update: bool = False) -> Job:
    job = repo.get_job(session, job_id, for_update=for_update)
    if job is None:
        raise not_found("job")
    return job


def spec_problem(line: str, field_of: Callable[[str], str] | None = None) -> dict[str, str]:
    """A SpecError line as {field, message}; ``field_of`` maps a spec path to the
    request's field (default: under ``spec.``)."""
    where, sep, message = line.partition(": ")
    if not sep:
        return {"field": "spec", "message": line}
    if field_of is not None:
        field = field_of(where)
    else:
        field = where if where == "spec" or where.startswith("spec.") else f"spec.{where}"
    return {"field": field, "message": message}


def invalid_spec(details: list[dict[str, str]]) -> ApiError:
    message = "; ".join(f"{d['field']}: {d['message']}" for d in details)
    return ApiError(422, "invalid_spec", message, details)


def _validate_spec(data: dict[str, Any]) -> JobSpec:
    try:
        return parse_spec(data)
    except SpecError as exc:
        raise invalid_spec([spec_problem(line) for line in exc.problems]) from None


# --- submit and list ----------------------------------------------------------


@router.post("/jobs", status_code=201, response_model=JobOut)
def submit_job(
    body: JobSubmit,
    session: SessionDep,
    user: UserDep,
    response: Response,
    settings: SettingsDep,
    idempotency_key: Annotated[str | None, Header()] = None,
) -> JobOut:
    """Queue a job. With an Idempotency-Key, a repeat of the same request
    answers 200 with the first job; a different body under that key is 409."""
    if idempotency_key is not None and not 0 < len(idempotency_key) <= MAX_IDEMPOTENCY_KEY:
        raise ApiError(
            422,
            "invalid_request",
            f"Idempotency-Key: must be 1 to {MAX_IDEMPOTENCY_KEY} characters",
            [{"field": "Idempotency-Key", "message": "wrong length"}],
        )
    spec = _validate_spec(body.spec)
    refuse_unfit(session, settings, body.resources)
    try:
        job, created = repo.submit_job(
            session,
            owner_id=user.id,
            spec=spec.model_dump(mode="json"),
            spec_hash=spec.identity(),
            priority=body.priority,
            name=body.name,
            tags=body.tags,
            resources=body.resources.model_dump(),
            dense_identity=spec.dense_identity(),
            idempotency_key=idempotency_key,
            body_hash=repo.request_hash(body.model_dump(mode="json")),
        )
    except repo.IdempotencyConflictError as exc:
        raise ApiError(409, "idempotency_conflict", str(exc), {"job_id": exc.job.id}) from None
    if not created:
        response.status_code = 200
    return job_out.detail(session, job.id)


@router.get("/jobs", response_model=JobPage)
def list_jobs(
    session: SessionDep,
    user: UserDep,
    status: Annotated[list[str] | None, Query()] = None,
    owner: str | None = None,
    tag: str | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> Response:
    """Jobs newest first; follow ``next_cursor`` for older ones."""
    allowed = [s.value for s in JobStatus]
    statuses = []
    for value in status or []:
        if value not in allowed:
            message = f"unknown status {value!r}; allowed: {', '.join(allowed)}"
            raise ApiError(
                422,
                "invalid_request",
                f"status: {message}",
                [{"field": "status", "message": message}],
            )
        statuses.append(JobStatus(value))
    filters = views.JobFilter(
        statuses=statuses,
        owner=owner,
        tag=tag,
        created_after=created_after,
        created_before=created_before,
    )
    try:
        jobs, next_cursor = views.list_jobs(session, filters, limit=limit, cursor=cursor)
    except views.InvalidCursorError as exc:
        raise ApiError(
            422, "invalid_request", str(exc), [{"field": "cursor", "message": "malformed cursor"}]
        ) from None
    return _answer(JobPage(items=job_out.summaries(session, jobs), next_cursor=next_cursor))


# --- one job --------------------------------------------------------------------


@router.get("/jobs/{job_id}", response_model=JobOut)
def get_job(job_id: int, session: SessionDep, user: UserDep) -> Response:
    """The job with its progress and place in the queue."""
    return _answer(job_out.detail(session, job_id))


def _answer(model: BaseModel) -> Response:
    """``model`` as the response body. The polls and list pages are the hottest
    requests: what they build is already valid, so it is serialised once,
    skipping FastAPI's second validation of the return value (an eighth of a
    poll's time). /docs still shows the route's response_model."""
    return Response(model.model_dump_json(), media_type="application/json")


@router.get("/jobs/{job_id}/cycles", response_model=CycleList)
def list_cycles(job_id: int, session: SessionDep, user: UserDep) -> CycleList:
    """The cycle table, one row per finished cycle."""
    _load(session, job_id)
    rows = repo.list_cycles(session, job_id)
    return CycleList(items=[CycleOut.model_validate(row) for row in rows])


@router.post("/jobs/{job_id}/cancel", response_model=JobOut)
def cancel_job(job_id: int, session: SessionDep, user: UserDep) -> JobOut:
    """Cancel a queued job, or ask a running one to stop."""
    job = _load(session, job_id, for_update=True)
    require_owner_or_admin(user, job.owner_id, "cancel")
    try:
        changed = repo.cancel_job(job)
    except IllegalTransitionError as exc:
        session.rollback()
        raise ApiError(409, "illegal_transition", str(exc)) from None
    if changed:
        session.commit()
    return job_out.detail(session, job.id)


@router.post("/jobs/{job_id}/retry", response_model=JobOut)
def retry_job(job_id: int, session: SessionDep, user: UserDep) -> JobOut:
    """Queue a failed or cancelled job again."""
    job = _load(session, job_id, for_update=True)
    require_owner_or_admin(user, job.owner_id, "retry")
    try:
        repo.retry_job(job)
    except (repo.NotRetryableError, IllegalTransitionError) as exc:
        session.rollback()
        raise ApiError(409, "illegal_transition", str(exc)) from None
    session.commit()
    return job_out.detail(session, job.id)


# --- events -----------------------------------------------------------------------


@router.get("/jobs/{job_id}/events", response_model=EventPage)
def list_events(
    job_id: int,
    session: SessionDep,
    user: UserDep,
    after: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    include_superseded: bool = False,
) -> EventPage:
    """Epoch events with ``seq > after``, oldest first."""
    _load(session, job_id)
    rows = repo.list_events(
        session, job_id, after=after, limit=limit, include_superseded=include_superseded
    )
    return EventPage(
        items=[EventOut.model_validate(row) for row in rows],
        next_after=rows[-1].seq if rows else after,
    )


def _sse(event: JobEvent) -> str:
    data = EventOut.model_validate(event).model_dump_json()
    return f"id: {event.seq}\nevent: epoch\ndata: {data}\n\n"


def _poll(factory: sessionmaker, job_id: int, after: int) -> tuple[str | None, list[str], int]:
    """The job's status, then the SSE frames of its events after ``after``."""
    with factory() as session:
        status = repo.job_status(session, job_id)
        rows = repo.list_events(session, job_id, after=after, limit=STREAM_BATCH)
        frames = [_sse(row) for row in rows]
        return status, frames, rows[-1].seq if rows else after


async def _stream(factory: sessionmaker, job_id: int, after: int) -> AsyncIterator[str]:
    last_sent = time.monotonic()
    while True:
        status, frames, after = await run_in_threadpool(_poll, factory, job_id, after)
        for frame in frames:
            yield frame
        if frames:
            last_sent = time.monotonic()
            if len(frames) == STREAM_BATCH:
                continue
        # The status was read before the events, so a final status means
        # every event was already written.
        if status is None or repo.is_terminal(status):
            yield f"event: end\ndata: {status or 'deleted'}\n\n"
            return
        if time.monotonic() - last_sent >= STREAM_KEEPALIVE_SECONDS:
            yield ": ping\n\n"
            last_sent = time.monotonic()
        await asyncio.sleep(STREAM_POLL_SECONDS)


@router.get(
    "/jobs/{job_id}/events/stream",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
def stream_events(
    job_id: int,
    request: Request,
    session: SessionDep,
    user: UserDep,
    after: Annotated[int | None, Query(ge=0)] = None,
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    """Server-Sent Events, one ``epoch`` event per epoch, then ``end`` once the
    job is final. Resumes after Last-Event-ID (or ``?after=``)."""
    _load(session, job_id)
    session.close()  # the stream polls with its own sessions
    start = after or 0
    if last_event_id:
        try:
            start = max(0, int(last_event_id))
        except ValueError:
            raise ApiError(
                422,
                "invalid_request",
                "Last-Event-ID: must be an event seq (an integer)",
                [{"field": "Last-Event-ID", "message": "not an integer"}],
            ) from None
    return StreamingResponse(
        _stream(request.app.state.session_factory, job_id, start),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


# --- artifacts ----------------------------------------------------------------------


@router.get("/jobs/{job_id}/artifacts", response_model=ArtifactList)
def list_artifacts(job_id: int, session: SessionDep, user: UserDep) -> ArtifactList:
    """The files the job produced."""
    _load(session, job_id)
    rows = repo.list_artifacts(session, job_id)
    return ArtifactList(items=[ArtifactOut.model_validate(row) for row in rows])


@router.get(
    "/jobs/{job_id}/artifacts/{name:path}",
    response_class=FileResponse,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
def download_artifact(
    job_id: int, name: str, request: Request, session: SessionDep, user: UserDep
) -> FileResponse:
    """Download one artifact."""
    _load(session, job_id)
    artifact = repo.get_artifact(session, job_id, name)
    if artifact is None:
        raise not_found("artifact")
    path = repo.artifact_path(artifact)
    # Only files under the artifact root are served: a worker registers the
    # location, and a location elsewhere must not turn into a file download.
    root = Path(request.app.state.settings.resolved_artifact_root()).resolve()
    if path is None or not path.resolve().is_relative_to(root) or not path.is_file():
        raise ApiError(404, "not_found", f"the file of artifact {name!r} is not available")
    filename = name.rsplit("/", 1)[-1]
    return FileResponse(
        path,
        media_type="application/octet-stream",
        filename=filename,
        content_disposition_type="attachment",
    )
