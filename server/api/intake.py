"""Progress intake for workers, authenticated by per-attempt tokens.

A worker holds no database credentials, only the token minted for its attempt.
The token is good for that job and attempt number only, and only while the
attempt is the job's live one: a superseded or finished attempt gets 409
``attempt_superseded``, so a zombie worker cannot overwrite its successor.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Request
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from server.api.deps import UNAUTHENTICATED, AttemptCredentials, SessionDep, bearer_token
from server.api.errors import ApiError, documented
from server.api.params import AttemptNumber, JobId
from server.api.routing import ApiRoute
from server.db.models import JobAttempt
from server.jobs.attempts import AttemptSupersededError, attempt_for_token
from server.jobs.reports import (
    IllegalReportError,
    record_artifact,
    record_cycle,
    record_events,
    report_status,
)
from server.jobs.repository import artifact_path
from server.jobs.states import IllegalTransitionError
from silo_contract.layout import output_folder
from silo_contract.reports import ArtifactIn, CycleResultIn, EventBatchIn, StatusIn

router = APIRouter(
    prefix="/v1",
    tags=["intake"],
    route_class=ApiRoute,
    responses=documented(401, 403, 409),
)

WRITE_TRIES = 3

T = TypeVar("T")


def current_attempt(
    session: SessionDep,
    job_id: JobId,
    attempt: AttemptNumber,
    credentials: AttemptCredentials,
) -> JobAttempt:
    """The attempt the bearer token was minted for; it must match the path."""
    found = attempt_for_token(session, bearer_token(credentials))
    if found is None:
        raise ApiError(
            401, "unauthenticated", "the attempt token is unknown", headers=UNAUTHENTICATED
        )
    if found.job_id != job_id or found.number != attempt:
        raise ApiError(
            403,
            "forbidden",
            "this token belongs to another job or attempt",
            {"job_id": found.job_id, "attempt": found.number},
        )
    return found


AttemptDep = Annotated[JobAttempt, Depends(current_attempt)]


def _write(session: Session, attempt: JobAttempt, apply: Callable[[JobAttempt], T]) -> T:
    """Run ``apply`` under the job lock and commit; map domain refusals to the error shape.

    A unique-constraint violation means another writer got there first; the
    whole operation is retried against the committed state.
    """
    for tries_left in range(WRITE_TRIES - 1, -1, -1):
        try:
            outcome = apply(attempt)
            session.commit()
            return outcome
        except AttemptSupersededError as exc:
            session.rollback()
            raise ApiError(409, "attempt_superseded", str(exc)) from exc
        except (IllegalTransitionError, IllegalReportError) as exc:
            session.rollback()
            raise ApiError(409, "illegal_transition", str(exc)) from exc
        except IntegrityError as exc:
            session.rollback()
            if not tries_left:
                raise ApiError(
                    409, "conflict", "a concurrent report conflicted with this one; retry"
                ) from exc
    raise AssertionError("unreachable")


@router.post("/jobs/{job_id}/attempts/{attempt}/events")
def post_events(body: EventBatchIn, current: AttemptDep, session: SessionDep) -> dict[str, int]:
    """Append epoch events; replaying an event already stored changes nothing."""
    events = [event.row_values() for event in body.events]
    outcome = _write(session, current, lambda a: record_events(session, a, events))
    return {
        "accepted": outcome.accepted,
        "duplicates": outcome.duplicates,
        "last_seq": outcome.last_seq,
    }


@router.post("/jobs/{job_id}/attempts/{attempt}/cycles")
def post_cycle(body: CycleResultIn, current: AttemptDep, session: SessionDep) -> dict[str, Any]:
    """Store one cycle's result (one row per cycle; the live attempt's replaces)."""
    values = body.row_values()
    outcome = _write(session, current, lambda a: record_cycle(session, a, values))
    return {"cycle": body.cycle, "created": outcome.created, "changed": outcome.changed}


def _in_output_folder(request: Request, job_id: int, location: str) -> bool:
    """Whether ``location`` is a file path inside the job's own output folder,
    links resolved: an attempt may not pass off another job's file as its own."""
    path = artifact_path(location)
    if path is None or not path.is_absolute():
        return False
    root = request.app.state.settings.resolved_artifact_root()
    return path.resolve().is_relative_to(output_folder(root, job_id).resolve())


@router.post("/jobs/{job_id}/attempts/{attempt}/artifacts")
def post_artifact(
    body: ArtifactIn, current: AttemptDep, session: SessionDep, request: Request
) -> dict[str, Any]:
    """Register (or replace) an artifact of the job by name: a file in the job's
    output folder."""
    if not _in_output_folder(request, current.job_id, body.location):
        message = "must be an absolute path inside this job's output folder"
        raise ApiError(
            422,
            "invalid_request",
            f"location: {message}",
            [{"field": "location", "message": message}],
        )
    values = body.model_dump()
    outcome = _write(session, current, lambda a: record_artifact(session, a, values))
    return {"name": body.name, "created": outcome.created, "changed": outcome.changed}


@router.post("/jobs/{job_id}/attempts/{attempt}/status")
def post_status(body: StatusIn, current: AttemptDep, session: SessionDep) -> dict[str, Any]:
    """Heartbeat (``running``) or finish the job; a final status ends the attempt."""
    outcome = _write(
        session,
        current,
        lambda a: report_status(session, a, body.status, body.message, body.note),
    )
    return {"status": outcome.status, "changed": outcome.changed}
