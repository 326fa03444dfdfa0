"""Path and query parameters as the routes take them, each bounded by what it is
compared with in the database (silo_contract.fields explains the bounds)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import Path, Query
from pydantic import AfterValidator, BeforeValidator

from silo_contract.fields import MAX_ID, MAX_INT, USER_NAME_LENGTH

JobId = Annotated[int, Path(ge=1, le=MAX_ID, description="A job's id")]
StudyId = Annotated[int, Path(ge=1, le=MAX_ID, description="A study's id")]
AttemptNumber = Annotated[int, Path(ge=1, le=MAX_INT, description="An attempt of the job")]
EventCursor = Annotated[int, Query(ge=0, le=MAX_ID, description="An event's seq")]
OwnerName = Annotated[str, Query(min_length=1, max_length=USER_NAME_LENGTH)]
TagName = Annotated[str, Query(min_length=1, max_length=64)]


def _iso_8601(value: object) -> object:
    """Only ISO 8601 text is a time here (pydantic would read "0.5" as a Unix time)."""
    if isinstance(value, str):
        try:
            datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(
                "must be an ISO 8601 date and time, e.g. 2026-12-03T10:00:00Z"
            ) from None
    return value


def _in_utc(value: datetime) -> datetime:
    """A time as UTC (a time without a zone is read as UTC); a time whose UTC
    reading falls outside years 1 to 9999 is refused, not overflowed."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("must lie between years 1 and 9999 once converted to UTC") from None


UtcTime = Annotated[datetime, BeforeValidator(_iso_8601), AfterValidator(_in_utc)]
