"""The jobs API's bodies: submitting a job, its summary and detail, its artifacts."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema

from silo_contract.fields import (
    MAX_TAGS,
    NAME_LENGTH,
    NOTE_LENGTH,
    JsonFloat,
    Priority,
    Tag,
    Timestamp,
)

# Ray counts resources in steps of 1e-4: a finer request is none at all.
RESOURCE_STEP = 0.0001
MAX_GPUS = 16
GPUS_DESCRIPTION = (
    "GPUs: a fraction of one card (0.25 shares a card four ways) or whole cards "
    "(1, 2, ...); Ray places a job's GPUs on one card or on whole cards only"
)


def _placeable_gpus(value: float) -> float:
    """Refuse what Ray would never place, where the job would wait for ever."""
    if 0 < value < RESOURCE_STEP:
        raise ValueError(f"must be 0 or at least {RESOURCE_STEP} (Ray's resolution)")
    if value > 1 and not value.is_integer():
        raise ValueError(
            "more than one GPU must be whole cards (2, 3, ...): a fraction shares one card"
        )
    return value


Gpus = Annotated[
    JsonFloat,
    Field(ge=0, le=MAX_GPUS),
    AfterValidator(_placeable_gpus),
    WithJsonSchema(
        {
            "description": GPUS_DESCRIPTION,
            "anyOf": [
                {"type": "number", "minimum": 0, "maximum": 0},
                {"type": "number", "minimum": RESOURCE_STEP, "maximum": 1},
                {"type": "integer", "minimum": 1, "maximum": MAX_GPUS},
            ],
        }
    ),
]


class Resources(BaseModel):
    """What one attempt asks of the cluster; fractional GPUs let small jobs share a card."""

    model_config = ConfigDict(extra="forbid")

    cpus: JsonFloat = Field(1.0, ge=RESOURCE_STEP, le=256, description="CPU cores")
    gpus: Gpus = 0.0
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


# A queued job's place is counted up to this many jobs ahead and no further:
# the count walks the queue, and past a thousand jobs the exact figure tells a
# user nothing that "over a thousand" does not, while costing every submit and
# every poll of a queued job time in proportion to the queue.
QUEUE_COUNT_LIMIT = 1000


class QueueInfo(BaseModel):
    position: int | None = Field(
        None,
        description=(
            "1-based among queued jobs; null if not queued. With more than "
            f"{QUEUE_COUNT_LIMIT} jobs ahead it is {QUEUE_COUNT_LIMIT + 1} and "
            "more_ahead is true"
        ),
    )
    more_ahead: bool = Field(
        False,
        description=f"More than {QUEUE_COUNT_LIMIT} jobs are ahead: position is a lower bound",
    )
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


class ArtifactOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    name: str
    size: int
    checksum: str
    attempt: int
    created_at: Timestamp


class ArtifactList(BaseModel):
    items: list[ArtifactOut]
