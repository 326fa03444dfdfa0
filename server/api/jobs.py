"""Jobs: submit, list, read, cancel, retry, events, cycles, artifacts."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, cast

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import FileResponse
from pydantic import BaseModel
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from server import files
from server.api import job_out
from server.api.access import Reader, ReaderDep, reader_for
from server.api.conditional import (
    ITEMS_CLOCK,
    JOB_CLOCK,
    NOT_MODIFIED,
    IfNoneMatch,
    Reading,
    WaitParam,
    answers,
    page_key,
    reading,
)
from server.api.deps import SessionDep, SettingsDep, UserDep, require_owner_or_admin
from server.api.errors import ApiError, documented, not_found
from server.api.follow import JobWatcher, StreamResponse
from server.api.params import EventCursor, JobId, OwnerName, TagName, UtcTime
from server.api.routing import ApiRoute
from server.auth.tokens import Caller, caller_writes
from server.changes.book import JOBS, QUEUE, job_key
from server.db.models import Job, JobEvent
from server.jobs import repository as repo
from server.jobs import views
from server.jobs.cluster import refuse_unfit
from server.jobs.states import IllegalTransitionError
from server.settings import Settings
from silo_contract.fields import ARTIFACT_NAME_PATTERN
from silo_contract.jobs import ArtifactList, ArtifactOut, JobOut, JobPage, JobSubmit
from silo_contract.layout import output_folder
from silo_contract.reports import CycleList, CycleOut, EventOut, EventPage
from silo_contract.status import JobStatus, is_terminal
from silo_core.spec import JobSpec, SpecError, parse_spec

router = APIRouter(prefix="/v1", tags=["jobs"], route_class=ApiRoute, responses=documented(401))

STREAM_KEEPALIVE_SECONDS = 15.0
STREAM_BATCH = 500
MAX_IDEMPOTENCY_KEY = 200


# --- helpers ----------------------------------------------------------------


def load_job(session: Session, job_id: int, reader: Reader, *, for_update: bool = False) -> Job:
    """The job if it exists and the reader may see it; 404 alike otherwise."""
    job = repo.get_job(session, job_id, for_update=for_update)
    if job is None or not reader.may_read(job.owner_id):
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


def check_weights(session: Session, spec: JobSpec, user: Caller, settings: Settings) -> None:
    """422 naming spec.model.weights unless the spec's starting weights are a file
    or an artifact the submitter may read (missing and invisible answer alike)."""
    if spec.model.weights is None:
        return
    reader = reader_for(user, settings.read_access)
    root = settings.resolved_artifact_root()
    try:
        files.weights_path(session, spec.model.weights, root, reader)
    except files.WeightsUnavailableError as exc:
        raise invalid_spec([{"field": "spec.model.weights", "message": str(exc)}]) from None


# --- submit and list ----------------------------------------------------------


@router.post(
    "/jobs",
    status_code=201,
    response_model=JobOut,
    responses={
        200: {"model": JobOut, "description": "The job an earlier use of the Idempotency-Key made"},
        **documented(409),
    },
)
def submit_job(
    body: JobSubmit,
    request: Request,
    user: UserDep,
    settings: SettingsDep,
    idempotency_key: Annotated[
        str | None, Header(min_length=1, max_length=MAX_IDEMPOTENCY_KEY)
    ] = None,
) -> Response:
    """Queue a job. With an Idempotency-Key, a repeat of the same request
    answers 200 with the first job; a different body under that key is 409."""
    spec = _validate_spec(body.spec)
    with repo.submit_session(request.app.state.session_factory) as session:
        check_weights(session, spec, user, settings)
        refuse_unfit(session, settings, body.resources)
        try:
            with caller_writes(session, user):
                job, created = repo.submit_job(
                    session,
                    owner_id=user.id,
                    spec=spec,
                    priority=body.priority,
                    name=body.name,
                    tags=body.tags,
                    resources=body.resources.model_dump(),
                    idempotency_key=idempotency_key,
                    body_hash=repo.request_hash(body.model_dump(mode="json")),
                )
        except repo.IdempotencyConflictError as exc:
            raise ApiError(409, "idempotency_conflict", str(exc), {"job_id": exc.job_id}) from None
    answer = _answer(job_out.detail_of(job))
    answer.status_code = 201 if created else 200
    return answer


@router.get("/jobs", response_model=JobPage, responses=NOT_MODIFIED)
async def list_jobs(
    request: Request,
    reader: ReaderDep,
    status: Annotated[list[JobStatus] | None, Query(max_length=len(JobStatus))] = None,
    owner: OwnerName | None = None,
    tag: TagName | None = None,
    created_after: UtcTime | None = None,
    created_before: UtcTime | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[
        str | None, Query(pattern=views.CURSOR_PATTERN, description="A page's next_cursor")
    ] = None,
    if_none_match: IfNoneMatch = None,
) -> Response:
    """Jobs newest first; follow ``next_cursor`` for older ones. Under
    ``SILO_READ_ACCESS=owner`` a user lists only their own jobs."""
    filters = views.JobFilter(
        statuses=list(status or []),
        owner=owner,
        owner_id=reader.only_owner,
        tag=tag,
        created_after=created_after,
        created_before=created_before,
    )

    def read(session: Session) -> Reading:
        try:
            jobs, next_cursor = views.list_jobs(session, filters, limit=limit, cursor=cursor)
        except views.InvalidCursorError as exc:
            problem = {"field": "cursor", "message": "malformed cursor"}
            raise ApiError(422, "invalid_request", str(exc), [problem]) from None
        return reading(
            lambda: JobPage(items=job_out.summaries(jobs), next_cursor=next_cursor),
            {JOBS},
            clock=ITEMS_CLOCK,
        )

    key = page_key("jobs", request, reader)
    return await answers(request).answer(
        key, read, request=request, reader=reader, if_none_match=if_none_match
    )


# --- one job --------------------------------------------------------------------


@router.get("/jobs/{job_id}", response_model=JobOut, responses=NOT_MODIFIED)
async def get_job(
    job_id: JobId,
    request: Request,
    reader: ReaderDep,
    if_none_match: IfNoneMatch = None,
    wait: WaitParam = None,
) -> Response:
    """The job with its progress and place in the queue. With If-None-Match, 304
    while it is unchanged; with ``?wait=``, a watch: answers once it changes."""

    def read(session: Session) -> Reading:
        view = job_out.readable_view(session, job_id, reader)
        keys = {job_key(job_id), QUEUE} if view.status == JobStatus.QUEUED else {job_key(job_id)}
        return reading(
            lambda: job_out.detail_of(view), keys, owner_id=view.owner_id, clock=JOB_CLOCK
        )

    return await answers(request).answer(
        ("job", job_id),
        read,
        request=request,
        reader=reader,
        if_none_match=if_none_match,
        wait=cast(float | None, wait),
    )


def _answer(model: BaseModel) -> Response:
    """``model`` as the response body. What a write route answers is already
    valid, so it is serialised once, skipping FastAPI's second validation of
    the return value. /docs still shows the route's response_model."""
    return Response(model.model_dump_json(), media_type="application/json")


@router.get("/jobs/{job_id}/cycles", response_model=CycleList, responses=NOT_MODIFIED)
async def list_cycles(
    job_id: JobId,
    request: Request,
    reader: ReaderDep,
    if_none_match: IfNoneMatch = None,
) -> Response:
    """The cycle table, one row per finished cycle."""

    def read(session: Session) -> Reading:
        job = load_job(session, job_id, reader)
        rows = repo.list_cycles(session, job_id)
        cycles = CycleList(items=[CycleOut.model_validate(row) for row in rows])
        return reading(lambda: cycles, {job_key(job_id)}, owner_id=job.owner_id)

    return await answers(request).answer(
        ("cycles", job_id),
        read,
        request=request,
        reader=reader,
        if_none_match=if_none_match,
    )


@router.post("/jobs/{job_id}/cancel", response_model=JobOut, responses=documented(403, 409))
def cancel_job(job_id: JobId, session: SessionDep, reader: ReaderDep) -> Response:
    """Cancel a queued job, or ask a running one to stop."""
    job = load_job(session, job_id, reader, for_update=True)
    require_owner_or_admin(reader.user, job.owner_id, "cancel")
    try:
        changed = repo.cancel_job(job)
    except IllegalTransitionError as exc:
        session.rollback()
        raise ApiError(409, "illegal_transition", str(exc)) from None
    if changed:
        session.commit()
    return _answer(job_out.detail(session, job.id))


@router.post("/jobs/{job_id}/retry", response_model=JobOut, responses=documented(403, 409))
def retry_job(job_id: JobId, session: SessionDep, reader: ReaderDep) -> Response:
    """Queue a failed or cancelled job again."""
    job = load_job(session, job_id, reader, for_update=True)
    require_owner_or_admin(reader.user, job.owner_id, "retry")
    try:
        repo.retry_job(job)
    except (repo.NotRetryableError, IllegalTransitionError) as exc:
        session.rollback()
        raise ApiError(409, "illegal_transition", str(exc)) from None
    session.commit()
    return _answer(job_out.detail(session, job.id))


# --- events -----------------------------------------------------------------------


@router.get("/jobs/{job_id}/events", response_model=EventPage)
def list_events(
    job_id: JobId,
    session: SessionDep,
    reader: ReaderDep,
    after: EventCursor = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    include_superseded: bool = False,
) -> EventPage:
    """Epoch events with ``seq > after``, oldest first."""
    load_job(session, job_id, reader)
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


async def _stream(
    watcher: JobWatcher, factory: sessionmaker, job_id: int, after: int
) -> AsyncIterator[str]:
    """The job's events from ``after`` on, read only when the watcher sees the
    job change; a comment line keeps an idle connection open."""
    async with watcher.follow(job_id) as follow:
        while True:
            status, frames, after = await run_in_threadpool(_poll, factory, job_id, after)
            for frame in frames:
                yield frame
            if len(frames) == STREAM_BATCH:
                continue
            # The status was read before the events, so a final status means
            # every event was already written.
            if status is None or is_terminal(status):
                yield f"event: end\ndata: {status or 'deleted'}\n\n"
                return
            while not await follow.wait(STREAM_KEEPALIVE_SECONDS):
                yield ": ping\n\n"
            if follow.closed:  # the server is stopping; a client resumes with Last-Event-ID
                return


def _resume_point(after: int | None, last_event_id: str | None) -> int:
    return int(last_event_id) if last_event_id else after or 0


@router.get(
    "/jobs/{job_id}/events/stream",
    response_class=StreamResponse,
    responses={200: {"content": {"text/event-stream": {}}}, **documented(429)},
)
def stream_events(
    job_id: JobId,
    request: Request,
    session: SessionDep,
    reader: ReaderDep,
    after: EventCursor | None = None,
    last_event_id: Annotated[
        str | None, Header(pattern=r"^[0-9]{1,15}$", description="The last event seq seen")
    ] = None,
) -> StreamResponse:
    """Server-Sent Events, one ``epoch`` event per epoch, then ``end`` once the
    job is final. Resumes after Last-Event-ID (or ``?after=``)."""
    load_job(session, job_id, reader)
    start = _resume_point(after, last_event_id)
    session.close()  # a stream holds no connection while it waits
    watcher: JobWatcher = request.app.state.watcher
    release = watcher.reserve(reader.user.id)
    return StreamResponse(
        _stream(watcher, request.app.state.read_session_factory, job_id, start),
        release,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


# --- artifacts ----------------------------------------------------------------------


@router.get("/jobs/{job_id}/artifacts", response_model=ArtifactList)
def list_artifacts(job_id: JobId, session: SessionDep, reader: ReaderDep) -> ArtifactList:
    """The files the job produced."""
    load_job(session, job_id, reader)
    rows = repo.list_artifacts(session, job_id)
    return ArtifactList(items=[ArtifactOut.model_validate(row) for row in rows])


@router.get(
    "/jobs/{job_id}/artifacts/{name}",
    response_class=FileResponse,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
def download_artifact(
    job_id: JobId,
    name: Annotated[str, PathParam(pattern=ARTIFACT_NAME_PATTERN)],
    request: Request,
    session: SessionDep,
    reader: ReaderDep,
) -> FileResponse:
    """Download one artifact."""
    load_job(session, job_id, reader)
    artifact = repo.get_artifact(session, job_id, name)
    if artifact is None:
        raise not_found("artifact")
    path = repo.artifact_path(artifact.location)
    # Only files in the job's own output folder are served: a worker registers
    # the location, and a location elsewhere (another job's weights, a file
    # outside the artifact root) must not turn into a download.
    output = output_folder(request.app.state.settings.resolved_artifact_root(), job_id)
    if path is None or not path.resolve().is_relative_to(output.resolve()) or not path.is_file():
        raise ApiError(404, "not_found", f"the file of artifact {name!r} is not available")
    return FileResponse(
        path,
        media_type="application/octet-stream",
        filename=name,
        content_disposition_type="attachment",
    )
