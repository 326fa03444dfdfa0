"""The studies API's bodies: one base spec run under several schedules and seeds."""

from __future__ import annotations

from collections import Counter
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from silo_contract.fields import MAX_TAGS, NAME_LENGTH, Priority, Seed, Tag, Timestamp
from silo_contract.jobs import Progress, Resources

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
