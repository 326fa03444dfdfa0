"""Studies: one base spec times a list of schedules times seeds, compared.

A study's members are ordinary jobs (queued, dispatched, cancelled like any
other) that carry the study's id and their schedule's label. Members with the
same seed differ only after cycle 0, so they share one dense training
(JobSpec.dense_identity; the dispatcher starts one of them first).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from server.db.models import CycleResultRow, Job, Study
from server.jobs.repository import queued_job
from silo_contract.fields import NAME_LENGTH
from silo_core.spec import JobSpec


def labels(schedules: Sequence[dict[str, Any]]) -> list[str]:
    """A label per schedule: its name, numbered when a name comes more than once."""
    names = [str(schedule.get("name")) for schedule in schedules]
    seen: dict[str, int] = defaultdict(int)
    out = []
    for name in names:
        seen[name] += 1
        out.append(name if names.count(name) == 1 else f"{name}#{seen[name]}")
    return out


def member_name(study_name: str, member: Member) -> str:
    """The member job's name, "<study>: <schedule>, seed <n>", the study's name
    shortened to fit the column."""
    suffix = f": {member.label}, seed {member.seed}"
    room = NAME_LENGTH - len(suffix)
    if len(study_name) > room:
        study_name = study_name[: room - 1] + "…"
    return study_name + suffix


def member_spec(base: dict[str, Any], schedule: dict[str, Any], seed: int) -> dict[str, Any]:
    return {**base, "schedule": schedule, "seed": seed}


@dataclass(frozen=True)
class Member:
    label: str
    seed: int
    spec: JobSpec


def create_study(
    session: Session,
    *,
    owner_id: int,
    name: str | None,
    base_spec: dict[str, Any],
    schedules: Sequence[dict[str, Any]],
    seeds: Sequence[int],
    members: Sequence[Member],
    priority: int,
    tags: Sequence[str],
    resources: dict[str, float | None],
) -> Study:
    """Store the study and its member jobs (queued) in the caller's transaction."""
    study = Study(
        owner_id=owner_id,
        name=name,
        base_spec=base_spec,
        schedules=list(schedules),
        seeds=list(seeds),
    )
    session.add(study)
    session.flush()
    for member in members:
        session.add(
            queued_job(
                owner_id=owner_id,
                spec=member.spec,
                name=member_name(name or f"study {study.id}", member),
                priority=priority,
                tags=tags,
                resources=resources,
                study_id=study.id,
                study_label=member.label,
            )
        )
    session.flush()
    return study


def study_members(session: Session, study_id: int) -> list[Job]:
    return list(session.scalars(select(Job).where(Job.study_id == study_id).order_by(Job.id)))


@dataclass(frozen=True)
class Cell:
    mean: float
    std: float | None  # sample standard deviation; None with one seed
    n: int


@dataclass(frozen=True)
class ComparisonRow:
    cycle: int
    sparsity: float
    results: dict[str, Cell]  # label -> test accuracy (at the best validation epoch)


def comparison(session: Session, study_id: int, order: Sequence[str]) -> list[ComparisonRow]:
    """For each cycle (each sparsity reached), each schedule's test accuracy
    over the seeds whose member has finished that cycle."""
    rows = session.execute(
        select(
            Job.study_label,
            CycleResultRow.cycle,
            CycleResultRow.sparsity,
            CycleResultRow.test_accuracy_at_best_val,
        )
        .join(Job, Job.id == CycleResultRow.job_id)
        .where(Job.study_id == study_id)
    ).all()
    accuracy: dict[int, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    sparsity: dict[int, list[float]] = defaultdict(list)
    for label, cycle, sparse, test_accuracy in rows:
        if label is None:  # every member has one; the column allows none for other jobs
            continue
        accuracy[cycle][label].append(test_accuracy)
        sparsity[cycle].append(sparse)
    table = []
    for cycle in sorted(accuracy):
        cells = {}
        for label in order:
            values = accuracy[cycle].get(label)
            if values:
                spread = statistics.stdev(values) if len(values) > 1 else None
                cells[label] = Cell(statistics.fmean(values), spread, len(values))
        table.append(ComparisonRow(cycle, statistics.fmean(sparsity[cycle]), cells))
    return table


def list_studies(
    session: Session, *, limit: int, before_id: int | None, owner_id: int | None = None
) -> tuple[list[Study], dict[int, dict[str, int]]]:
    """Studies newest first (ids below ``before_id``; ``owner_id``'s only, if
    given), with their members per status."""
    query = select(Study).order_by(Study.id.desc()).limit(limit)
    if before_id is not None:
        query = query.where(Study.id < before_id)
    if owner_id is not None:
        query = query.where(Study.owner_id == owner_id)
    found = list(session.scalars(query))
    counts: dict[int, dict[str, int]] = {study.id: {} for study in found}
    if found:
        rows = session.execute(
            select(Job.study_id, Job.status, func.count())
            .where(Job.study_id.in_(counts))
            .group_by(Job.study_id, Job.status)
        )
        for study_id, status, count in rows:
            if study_id is not None:  # always, by the query's IN
                counts[study_id][status] = count
    return found, counts
