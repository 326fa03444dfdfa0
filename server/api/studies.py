"""Studies: submit one base spec times schedules times seeds; read the comparison."""

from __future__ import annotations

from collections import Counter
from functools import partial
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, field_validator

from server.api.deps import SessionDep, UserDep
from server.api.errors import ApiError
from server.api.jobs import invalid_spec, spec_problem
from server.db.models import Study
from server.jobs import studies
from server.jobs.schemas import MAX_TAGS, Resources, Tag, Timestamp
from silo_core.spec import SpecError, parse_spec

router = APIRouter(prefix="/v1", tags=["studies"])

MAX_SCHEDULES = 12
MAX_SEEDS = 20


class StudySubmit(BaseModel):
    """A study: ``spec`` with its schedule replaced by each of ``schedules``, and its
    seed by each of ``seeds``; every combination is one member job."""

    model_config = ConfigDict(extra="forbid")

    spec: dict[str, Any] = Field(description="The base JobSpec (its schedule and seed are set)")
    schedules: list[dict[str, Any]] = Field(
        default_factory=lambda: [dict(s) for s in studies.DEFAULT_SCHEDULES],
        min_length=1,
        max_length=MAX_SCHEDULES,
        description="Schedule specs, as in a JobSpec's `schedule`",
    )
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1, max_length=MAX_SEEDS)
    name: str | None = Field(None, max_length=200)
    priority: int = Field(0, ge=-100, le=100)
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


class StudyOut(BaseModel):
    id: int
    name: str | None
    owner: str
    created_at: Timestamp
    schedules: list[str]
    seeds: list[int]
    status: dict[str, int] = Field(description="Member jobs per status")
    members: list[MemberOut]
    comparison: list[ComparisonRowOut]


def _request_field(schedule_index: int, where: str) -> str:
    """Where in a study request a member spec's field came from."""
    if where == "schedule" or where.startswith("schedule."):
        return f"schedules[{schedule_index}]" + where.removeprefix("schedule")
    return f"spec.{where}"


def _members(data: StudySubmit) -> list[studies.Member]:
    """Every member spec, validated; all problems at once, named by request field."""
    labels = studies.labels(data.schedules)
    members, problems = [], []
    for index, (label, schedule) in enumerate(zip(labels, data.schedules, strict=True)):
        for seed in data.seeds:
            try:
                spec = parse_spec(studies.member_spec(data.spec, schedule, seed))
            except SpecError as exc:
                field_of = partial(_request_field, index)
                for line in exc.problems:
                    problem = spec_problem(line, field_of)
                    if problem not in problems:
                        problems.append(problem)
                continue
            members.append(studies.Member(label, seed, spec))
    if problems:
        raise invalid_spec(problems)
    return members


def _out(session: SessionDep, study: Study) -> StudyOut:
    jobs = studies.study_members(session, study.id)
    order = studies.labels(study.schedules)
    table = studies.comparison(session, study.id, order)
    return StudyOut(
        id=study.id,
        name=study.name,
        owner=study.owner.name,
        created_at=study.created_at,
        schedules=order,
        seeds=list(study.seeds),
        status=dict(Counter(job.status for job in jobs)),
        members=[
            MemberOut(
                job_id=job.id,
                schedule=job.study_label or "",
                seed=int(job.spec.get("seed", 0)),
                status=job.status,
            )
            for job in jobs
        ],
        comparison=[
            ComparisonRowOut(
                cycle=row.cycle,
                sparsity=row.sparsity,
                test_accuracy={
                    label: CellOut(mean=c.mean, std=c.std, n=c.n)
                    for label, c in row.results.items()
                },
            )
            for row in table
        ],
    )


@router.post("/studies", status_code=201, response_model=StudyOut)
def submit_study(body: StudySubmit, session: SessionDep, user: UserDep) -> StudyOut:
    """Queue one job per schedule and seed; members with one seed share the dense training."""
    members = _members(body)
    study = studies.create_study(
        session,
        owner_id=user.id,
        name=body.name,
        base_spec=body.spec,
        schedules=body.schedules,
        seeds=body.seeds,
        members=members,
        priority=body.priority,
        tags=body.tags,
        resources=body.resources.model_dump(),
    )
    session.commit()
    return _out(session, study)


@router.get("/studies/{study_id}", response_model=StudyOut)
def get_study(study_id: int, session: SessionDep, user: UserDep) -> StudyOut:
    """The study, its members' states and the comparison table so far."""
    study = session.get(Study, study_id)
    if study is None:
        raise ApiError(404, "not_found", "no such study")
    return _out(session, study)
