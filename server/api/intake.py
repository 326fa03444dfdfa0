"""Progress intake for workers, authenticated by per-attempt tokens.

A worker holds no database credentials, only the token minted for its attempt.
The token is good for that job and attempt number only, and only while the
attempt is the job's live one: a superseded or finished attempt gets 409
``attempt_superseded``, so a zombie worker cannot overwrite its successor.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator
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
from silo_client.models import (
    ARTIFACT_NAME_PATTERN,
    NOTE_LENGTH,
    BigCount,
    Count,
    PositiveCount,
)
from silo_core.spec.json_types import JsonFloat
from workers.layout import output_folder

router = APIRouter(
    prefix="/v1",
    tags=["intake"],
    route_class=ApiRoute,
    responses=documented(401, 403, 409),
)

MAX_EVENTS_PER_BATCH = 500
WRITE_TRIES = 3

T = TypeVar("T")


class _Report(BaseModel):
    """Fields beyond the known ones are kept in ``extras`` rather than refused,
    so a newer engine can report more without a schema change here."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    extras: dict[str, Any] | None = None

    def merged_extras(self) -> dict[str, Any]:
        return {**(self.model_extra or {}), **(self.extras or {})}

    def row_values(self) -> dict[str, Any]:
        """The declared fields as columns, everything else folded into ``extras``."""
        values = self.model_dump(exclude={"extras"})
        for name in self.model_extra or {}:
            values.pop(name, None)
        values["extras"] = self.merged_extras()
        return values


class EpochEventIn(_Report):
    """One epoch's progress, as ``silo_core.records.EpochEvent`` writes it."""

    cycle: Count
    epoch: PositiveCount
    epochs: PositiveCount
    cycles: Count
    lr: JsonFloat
    max_lr: JsonFloat
    train_loss: JsonFloat
    train_accuracy: JsonFloat
    val_loss: JsonFloat
    val_accuracy: JsonFloat
    sparsity: JsonFloat
    seconds: JsonFloat = Field(ge=0)


class EventBatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: list[EpochEventIn] = Field(min_length=1, max_length=MAX_EVENTS_PER_BATCH)

    @field_validator("events", mode="before")
    @classmethod
    def _bounded(cls, value: Any) -> Any:
        # Refuse an oversized batch before validating each of its events.
        if isinstance(value, list) and len(value) > MAX_EVENTS_PER_BATCH:
            raise ValueError(f"at most {MAX_EVENTS_PER_BATCH} events per batch (got {len(value)})")
        return value


class CycleResultIn(_Report):
    """One cycle-table row, as ``silo_core.records.CycleResult`` writes it."""

    cycle: Count
    sparsity: JsonFloat
    alive_weights: BigCount
    max_lr: JsonFloat
    best_epoch: Count
    best_val_accuracy: JsonFloat
    test_accuracy_at_best_val: JsonFloat
    final_val_accuracy: JsonFloat
    final_test_accuracy: JsonFloat
    seconds: JsonFloat = Field(ge=0)


class ArtifactIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=ARTIFACT_NAME_PATTERN)
    size: BigCount
    checksum: str = Field(pattern=r"^[0-9a-fA-F]{64}$", description="SHA-256, hex")
    location: str = Field(
        min_length=1, max_length=4096, description="A file in the job's output folder"
    )


class StatusIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: Literal["running", "succeeded", "failed", "cancelled"]
    message: str | None = Field(default=None, max_length=10_000)
    note: str | None = Field(
        default=None,
        max_length=NOTE_LENGTH,
        description="With running: what the job does while no epoch is reported; null clears",
    )


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
