"""The API's request and response bodies, shared by the server and its clients.

The server validates and answers with these models (they are what /docs
shows); ``silo_client`` parses answers into them. Pydantic only: no server
import, so a notebook can install the client without the service.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
    field_validator,
)

from silo_core.spec.json_types import Integral, JsonFloat, Strictly

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

Tag = Annotated[str, StringConstraints(pattern=TAG_PATTERN)]
UserName = Annotated[str, StringConstraints(pattern=USER_NAME_PATTERN, max_length=USER_NAME_LENGTH)]


def as_utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; every stored time is UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


Timestamp = Annotated[datetime, AfterValidator(as_utc)]


class Resources(BaseModel):
    """What one attempt asks of the cluster; fractional GPUs let small jobs share a card."""

    model_config = ConfigDict(extra="forbid")

    cpus: JsonFloat = Field(1.0, gt=0, le=256, description="CPU cores")
    gpus: JsonFloat = Field(0.0, ge=0, le=16, description="GPUs; 0.25 shares one card four ways")
    memory_gb: JsonFloat | None = Field(None, gt=0, le=4096, description="Memory to reserve")


class JobSubmit(BaseModel):
    """A new job: the spec is checked against the JobSpec before anything is stored."""

    model_config = ConfigDict(extra="forbid")

    spec: dict[str, Any] = Field(description="A JobSpec (see silo_core.spec)")
    priority: Priority = 0
    name: str | None = Field(None, max_length=NAME_LENGTH)
    tags: list[Tag] = Field(default_factory=list, max_length=MAX_TAGS)
    resources: Resources = Field(default_factory=Resources)


class Progress(BaseModel):
    cycle: int | None = Field(None, description="Current cycle; 0 is the dense training")
    cycles: int | None = Field(None, description="Planned prune-retrain cycles")
    epoch: int | None = None
    epochs: int | None = Field(None, description="Epochs of the current cycle")
    sparsity: float | None = None
    best_accuracy: float | None = Field(
        None, description="Highest validation accuracy of any epoch so far (not test accuracy)"
    )
    elapsed_seconds: float | None = None
    eta_seconds: float | None = Field(None, description="Estimate; null when unknown")
    note: str | None = Field(
        None,
        max_length=NOTE_LENGTH,
        description="What a running job does while no epoch ends (the Oracle's search)",
    )


class QueueInfo(BaseModel):
    position: int | None = Field(None, description="1-based among queued jobs; null if not queued")
    reason: str | None = None


class JobSummary(BaseModel):
    id: int
    name: str | None
    owner: str
    status: str
    priority: int
    tags: list[str]
    spec_hash: str
    model: str | None = Field(None, description="The spec's model name")
    dataset: str | None = Field(None, description="The spec's data set name")
    schedule: str | None = Field(None, description="The spec's schedule name")
    created_at: Timestamp
    started_at: Timestamp | None
    finished_at: Timestamp | None
    attempt: int
    progress: Progress


class JobOut(JobSummary):
    spec: dict[str, Any]
    resources: Resources
    error_message: str | None
    queue: QueueInfo


class JobPage(BaseModel):
    items: list[JobSummary]
    next_cursor: str | None = Field(None, description="Pass as ?cursor= for the next page")


class CycleOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    cycle: int
    attempt: int
    sparsity: float
    alive_weights: int
    max_lr: float
    best_epoch: int
    best_val_accuracy: float
    test_accuracy_at_best_val: float
    final_val_accuracy: float
    final_test_accuracy: float
    seconds: float
    extras: dict[str, Any]


class CycleList(BaseModel):
    items: list[CycleOut]


class EventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    seq: int
    attempt: int
    cycle: int
    epoch: int
    epochs: int
    lr: float
    max_lr: float
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    sparsity: float
    seconds: float
    superseded: bool
    extras: dict[str, Any]
    created_at: Timestamp


class EventPage(BaseModel):
    items: list[EventOut]
    next_after: int = Field(description="Pass as ?after= to read on")


class ArtifactOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    name: str
    size: int
    checksum: str
    attempt: int
    created_at: Timestamp


class ArtifactList(BaseModel):
    items: list[ArtifactOut]


# --- uploaded files --------------------------------------------------------------


class FileOut(BaseModel):
    """An uploaded file; ``reference`` is what a spec's ``model.weights`` names it by."""

    id: Id
    reference: str = Field(description="file:<id>, for model.weights")
    name: str
    size: BigCount
    sha256: str
    owner: str
    created_at: Timestamp


class FilePage(BaseModel):
    items: list[FileOut]
    next_cursor: str | None = Field(None, description="Pass as ?cursor= for the next page")


# --- studies -----------------------------------------------------------------

DEFAULT_STUDY_SCHEDULES: tuple[dict[str, Any], ...] = (
    {"name": "silo"},
    {"name": "lr_rewind"},
    {"name": "slr"},
    {"name": "clr"},
    {"name": "fine_tune"},
    {"name": "oracle"},
)
MAX_SCHEDULES = 12
MAX_SEEDS = 20


class StudySubmit(BaseModel):
    """A study: ``spec`` with its schedule replaced by each of ``schedules``, and its
    seed by each of ``seeds``; every combination is one member job."""

    model_config = ConfigDict(extra="forbid")

    spec: dict[str, Any] = Field(description="The base JobSpec (its schedule and seed are set)")
    schedules: list[dict[str, Any]] = Field(
        default_factory=lambda: [dict(s) for s in DEFAULT_STUDY_SCHEDULES],
        min_length=1,
        max_length=MAX_SCHEDULES,
        description="Schedule specs, as in a JobSpec's `schedule`",
    )
    seeds: list[Seed] = Field(
        default_factory=lambda: [0, 1, 2],
        min_length=1,
        max_length=MAX_SEEDS,
        json_schema_extra={"uniqueItems": True},
    )
    name: str | None = Field(None, max_length=NAME_LENGTH)
    priority: Priority = 0
    tags: list[Tag] = Field(default_factory=list, max_length=MAX_TAGS)
    resources: Resources = Field(default_factory=Resources)

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, seeds: list[int]) -> list[int]:
        repeated = [seed for seed, count in Counter(seeds).items() if count > 1]
        if repeated:
            raise ValueError(f"seeds must be distinct; repeated: {repeated}")
        return seeds


class MemberOut(BaseModel):
    job_id: int
    schedule: str
    seed: int
    status: str
    progress: Progress


class CellOut(BaseModel):
    mean: float
    std: float | None = Field(description="Sample standard deviation over seeds; null for one")
    n: int = Field(description="Seeds that finished this cycle")


class ComparisonRowOut(BaseModel):
    cycle: int
    sparsity: float
    test_accuracy: dict[str, CellOut] = Field(
        description="Per schedule: test accuracy at the best validation epoch"
    )


class StudySummary(BaseModel):
    id: int
    name: str | None
    owner: str
    created_at: Timestamp
    schedules: list[str]
    seeds: list[int]
    status: dict[str, int] = Field(description="Member jobs per status")


class StudyPage(BaseModel):
    items: list[StudySummary]
    next_cursor: str | None = Field(None, description="Pass as ?cursor= for the next page")


class StudyOut(StudySummary):
    members: list[MemberOut]
    comparison: list[ComparisonRowOut]


# --- errors ------------------------------------------------------------------


class ErrorBody(BaseModel):
    code: str = Field(description="Machine-readable, e.g. not_found, invalid_request")
    message: str = Field(description="For people: what is wrong and what is allowed")
    details: Any = Field(None, description="Per code: e.g. [{field, message}] for invalid input")


class ErrorOut(BaseModel):
    """Every error the API answers has this shape."""

    error: ErrorBody


# --- tokens, users, audit ------------------------------------------------------

TokenState = Literal["active", "expired", "revoked"]


class TokenOut(BaseModel):
    """A user's API token as administration sees it: never the token itself."""

    id: int
    user: str
    prefix: str = Field(description="The token's first characters, to recognise it by")
    created_at: Timestamp
    expires_at: Timestamp | None = Field(description="Null: the token does not expire")
    state: TokenState
    revoked_at: Timestamp | None
    revoked_by: str | None = Field(description="Who revoked it (`user:NAME`, `local:UNIX-USER`)")


class TokenList(BaseModel):
    items: list[TokenOut]


class TokenCreate(BaseModel):
    """A new token for ``user`` (created if new; ``admin`` makes them an admin)."""

    model_config = ConfigDict(extra="forbid")

    user: UserName
    admin: StrictBool = False
    expires_in_seconds: (
        Annotated[int, Strictly, Field(ge=60, le=MAX_TOKEN_LIFETIME_SECONDS), Integral] | None
    ) = Field(None, description="Null: no expiry")


class TokenCreated(TokenOut):
    token: str = Field(description="The bearer token; shown this once, only its hash is kept")


class UserOut(BaseModel):
    name: str
    admin: bool
    active: bool
    created_at: Timestamp
    active_tokens: int = Field(description="Tokens neither revoked nor expired")


class UserList(BaseModel):
    items: list[UserOut]


class UserUpdate(BaseModel):
    """What to change of a user; a field left out stays as it is."""

    model_config = ConfigDict(extra="forbid")

    active: StrictBool | None = Field(None, description="False: every token of the user is refused")
    admin: StrictBool | None = None


class MeOut(BaseModel):
    """Who the calling token belongs to."""

    name: str
    admin: bool
    token_id: int
    token_prefix: str
    expires_at: Timestamp | None


class AuditEventOut(BaseModel):
    id: int
    at: Timestamp
    actor: str
    action: str = Field(description="token.create, token.revoke, user.create, user.deactivate, ...")
    target: str = Field(description="`token:ID` or `user:NAME`")
    details: dict[str, Any]


class AuditPage(BaseModel):
    items: list[AuditEventOut]
    next_before: int | None = Field(None, description="Pass as ?before= for older events")


class BuiltinOrigin(BaseModel):
    """A name this project ships."""

    source: Literal["builtin"]


class PluginOrigin(BaseModel):
    """A name an installed plug-in package declares (an entry point)."""

    source: Literal["plugin"]
    distribution: str = Field(description="The plug-in's package")
    version: str = Field(description="The plug-in package's version")


class CatalogItem(BaseModel):
    name: str
    origin: Annotated[BuiltinOrigin | PluginOrigin, Field(discriminator="source")]


class CatalogOut(BaseModel):
    """What this deployment can run: the names a spec may use, and where each comes from."""

    models: list[CatalogItem]
    datasets: list[CatalogItem]
    pruning_methods: list[CatalogItem]
    schedules: list[CatalogItem]
    presets: list[CatalogItem]
