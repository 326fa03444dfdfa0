"""Studies: submit one base spec times schedules times seeds; read the comparison."""

from __future__ import annotations

from collections import Counter
from functools import partial
from typing import Annotated, cast

from fastapi import APIRouter, Query, Request, Response
from sqlalchemy.orm import Session

from server.api import job_out
from server.api.access import ReaderDep
from server.api.conditional import (
    MEMBERS_CLOCK,
    NOT_MODIFIED,
    IfNoneMatch,
    Reading,
    WaitParam,
    answers,
    page_key,
    reading,
)
from server.api.deps import SessionDep, SettingsDep, UserDep
from server.api.errors import documented, not_found
from server.api.jobs import check_weights, invalid_spec, spec_problem
from server.api.params import StudyId
from server.api.routing import ApiRoute
from server.auth.tokens import caller_writes
from server.changes.book import JOBS, STUDIES, job_key, study_key
from server.db.models import Job, Study
from server.jobs import studies
from server.jobs.cluster import refuse_unfit
from silo_contract.studies import (
    CellOut,
    ComparisonRowOut,
    MemberOut,
    StudyOut,
    StudyPage,
    StudySubmit,
    StudySummary,
)
from silo_core.spec import SpecError, parse_spec

router = APIRouter(prefix="/v1", tags=["studies"], route_class=ApiRoute, responses=documented(401))


def _request_field(schedule_index: int | None, where: str) -> str:
    """Where in a study request a member spec's field came from (``schedule_index``
    None: the base spec's own schedule)."""
    if schedule_index is not None and (where == "schedule" or where.startswith("schedule.")):
        return f"schedules[{schedule_index}]" + where.removeprefix("schedule")
    return "spec" if where == "spec" else f"spec.{where}"


def _base_problems(data: StudySubmit) -> list[dict[str, str]]:
    """The base spec's own problems. Its schedule and seed are replaced in every
    member, but a wrong one is still refused, not silently dropped."""
    if "schedule" not in data.spec and "seed" not in data.spec:
        return []
    base = {**data.spec, "schedule": data.spec.get("schedule", data.schedules[0])}
    try:
        parse_spec(base)
    except SpecError as exc:
        field_of = partial(_request_field, None if "schedule" in data.spec else 0)
        return [spec_problem(line, field_of) for line in exc.problems]
    return []


def _members(data: StudySubmit) -> list[studies.Member]:
    """Every member spec, validated; all problems at once, named by request field."""
    labels = studies.labels(data.schedules)
    members, problems = [], _base_problems(data)
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


def _summary(study: Study, status: dict[str, int]) -> StudySummary:
    return StudySummary(
        id=study.id,
        name=study.name,
        owner=study.owner.name,
        created_at=study.created_at,
        schedules=studies.labels(study.schedules),
        seeds=list(study.seeds),
        status=status,
    )


def _out(session: Session, study: Study) -> StudyOut:
    return _build(study, *_parts(session, study))


def _parts(session: Session, study: Study) -> tuple[list[Job], list[studies.ComparisonRow]]:
    """What a study's answer is made of: its member jobs and its comparison table."""
    jobs = studies.study_members(session, study.id)
    return jobs, studies.comparison(session, study.id, studies.labels(study.schedules))


def _build(study: Study, jobs: list[Job], table: list[studies.ComparisonRow]) -> StudyOut:
    """The study's answer from what was read; its members' progress counted to now."""
    return StudyOut(
        **_summary(study, dict(Counter(job.status for job in jobs))).model_dump(),
        members=[
            MemberOut(
                job_id=job.id,
                schedule=job.study_label or "",
                seed=int(job.spec.get("seed", 0)),
                status=job.status,
                progress=job_out.progress_of(job),
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
def submit_study(
    body: StudySubmit, session: SessionDep, user: UserDep, settings: SettingsDep
) -> StudyOut:
    """Queue one job per schedule and seed; members with one seed share the dense training."""
    members = _members(body)
    # Every member starts from the base spec's weights: one check covers them all.
    check_weights(session, members[0].spec, user, settings)
    refuse_unfit(session, settings, body.resources)
    with caller_writes(session, user):
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


@router.get("/studies", response_model=StudyPage, responses=NOT_MODIFIED)
async def list_studies(
    request: Request,
    reader: ReaderDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(pattern=r"^[0-9]{1,18}$")] = None,
    if_none_match: IfNoneMatch = None,
) -> Response:
    """Studies newest first, with their members per status; follow ``next_cursor``.
    Under ``SILO_READ_ACCESS=owner`` a user lists only their own studies."""

    def read(session: Session) -> Reading:
        found, counts = studies.list_studies(
            session,
            limit=limit,
            before_id=int(cursor) if cursor else None,
            owner_id=reader.only_owner,
        )
        items = [_summary(study, counts[study.id]) for study in found]
        more = len(found) == limit
        page = StudyPage(items=items, next_cursor=str(found[-1].id) if more and found else None)
        return reading(lambda: page, {STUDIES, JOBS})  # a member's status counts

    key = page_key("studies", request, reader)
    return await answers(request).answer(
        key, read, request=request, reader=reader, if_none_match=if_none_match
    )


@router.get("/studies/{study_id}", response_model=StudyOut, responses=NOT_MODIFIED)
async def get_study(
    study_id: StudyId,
    request: Request,
    reader: ReaderDep,
    if_none_match: IfNoneMatch = None,
    wait: WaitParam = None,
) -> Response:
    """The study, its members' states and the comparison table so far. With
    If-None-Match, 304 while it is unchanged; with ``?wait=``, a watch."""

    def read(session: Session) -> Reading:
        study = session.get(Study, study_id)
        if study is None or not reader.may_read(study.owner_id):
            raise not_found("study")
        jobs, table = _parts(session, study)
        keys = {study_key(study_id), *(job_key(job.id) for job in jobs)}
        return reading(
            lambda: _build(study, jobs, table), keys, owner_id=study.owner_id, clock=MEMBERS_CLOCK
        )

    return await answers(request).answer(
        ("study", study_id),
        read,
        request=request,
        reader=reader,
        if_none_match=if_none_match,
        wait=cast(float | None, wait),
    )
