"""The value types of the contract: JSON numbers, bounded ids and counts, strings, times.

Numbers are read as JSON Schema reads them, by every model that parses a request or a spec.

JSON Schema's ``integer`` is a number without a fraction, so ``3.0`` is one;
``true``, ``"3"`` and ``3.5`` are not, and none of them is a ``number``
either. Pydantic's lax mode takes ``true`` as 1 and ``"3"`` as 3; its strict
mode refuses ``3.0`` for an int. These markers sit between:

    Annotated[int, Strictly, Field(ge=0, le=9), Integral]
    Annotated[float, Strictly, Field(gt=0)]   (a strict float takes ints, as JSON does)

``Integral`` must come after the bounds: pydantic then keeps them in the
integer's schema (``minimum``/``maximum``) and turns ``3.0`` into 3 before it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, Strict, StringConstraints


def _integral(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


Strictly = Strict()
Integral = BeforeValidator(_integral)
JsonInt = Annotated[int, Strictly, Integral]
JsonFloat = Annotated[float, Strictly]

# Every integer the API accepts is bounded by the column it ends up in (or is
# compared with): PostgreSQL refuses a BIGINT past 2**63 - 1 and an INTEGER past
# 2**31 - 1, and SQLite any integer past 2**63 - 1, as errors, not as "no rows".
# Ids and other BIGINT values stop at 2**53 - 1, the largest integer a JSON
# number (a double; JavaScript's Number.MAX_SAFE_INTEGER) carries exactly, so
# that every client reads them as sent and the OpenAPI bounds are exact.
MAX_ID = 2**53 - 1
MAX_INT = 2**31 - 1
Id = Annotated[int, Strictly, Field(ge=1, le=MAX_ID), Integral]
Count = Annotated[int, Strictly, Field(ge=0, le=MAX_INT), Integral]
PositiveCount = Annotated[int, Strictly, Field(ge=1, le=MAX_INT), Integral]
BigCount = Annotated[int, Strictly, Field(ge=0, le=MAX_ID), Integral]
Seed = Annotated[int, Strictly, Field(ge=0, le=MAX_INT), Integral]
Priority = Annotated[
    int, Strictly, Field(ge=-100, le=100, description="Higher runs first"), Integral
]

# Lengths and patterns, as the columns store them.
TAG_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
ARTIFACT_NAME_PATTERN = r"^[A-Za-z0-9._-]{1,200}$"
NOTE_LENGTH = 200  # a job's progress note, as stored and as a worker may send it
NAME_LENGTH = 200  # a job's or a study's name, as stored
USER_NAME_LENGTH = 64
MAX_TAGS = 20
USER_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
FILE_NAME_LENGTH = 255  # an uploaded file's name, as its uploader gave it
ACTOR_LENGTH = 128  # who did an administrative change (``user:alice``, ``local:root``)
MAX_TOKEN_LIFETIME_SECONDS = 10 * 366 * 86400  # ten years

Tag = Annotated[str, StringConstraints(pattern=TAG_PATTERN)]
UserName = Annotated[str, StringConstraints(pattern=USER_NAME_PATTERN, max_length=USER_NAME_LENGTH)]


def as_utc(value: datetime) -> datetime:
    """A time in UTC; a naive one is taken as UTC already (every stored time is)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


Timestamp = Annotated[datetime, AfterValidator(as_utc)]
