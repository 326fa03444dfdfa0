"""A job as the API answers it: the summary a list shows, the detail a poll shows.

Both carry the job's progress, and progress needs the spec's plan (cycles and
epochs) while a list page reads no specs. Plans are therefore parsed once per
distinct spec hash and kept; a list page reads the specs only of hashes not
seen before, in one extra statement.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

from sqlalchemy.orm import Session

from server.api.access import Reader
from server.api.errors import not_found
from server.db.models import Job, utcnow
from server.jobs import views
from server.jobs.states import JobStatus
from server.jobs.views import JobView
from silo_contract.fields import as_utc
from silo_contract.jobs import JobOut, JobSummary, Progress, QueueInfo, Resources
from silo_core.spec import SpecError, parse_spec


@dataclass(frozen=True)
class Plan:
    """What a summary needs from a spec: its names and the planned cycles and epochs."""

    model: str
    dataset: str
    schedule: str
    cycles: int
    dense_epochs: int
    epochs_per_cycle: int


log = logging.getLogger("silo.api")

# Read and written by the request threads at once, so a read is one lookup
# (never "check, then read": another thread's clear may come between).
_PLANS: dict[str, Plan | None] = {}
_MAX_PLANS = 4096
# The summary fields read straight off the view; the rest come from the plan.
_VIEW_FIELDS = tuple(
    name for name in JobSummary.model_fields if name not in {*Plan.__dataclass_fields__, "progress"}
)


def _parse_plan(spec_hash: str, spec: dict) -> Plan | None:
    """The plan of ``spec``, kept under its hash (equal hashes mean equal specs).
    None for a spec this version cannot read."""
    with contextlib.suppress(KeyError):
        return _PLANS[spec_hash]
    try:
        parsed = parse_spec(spec)
        plan = Plan(
            model=parsed.model.name,
            dataset=parsed.dataset.name,
            schedule=parsed.schedule.name,
            cycles=parsed.pruning.planned_cycles(),
            dense_epochs=parsed.training.dense_epochs,
            epochs_per_cycle=parsed.training.epochs_per_cycle,
        )
    except SpecError:
        plan = None
    except Exception:  # a stored spec this version cannot plan must not fail a list page
        log.exception("cannot plan the stored spec %s", spec_hash)
        plan = None
    if len(_PLANS) >= _MAX_PLANS:
        _PLANS.clear()
    _PLANS[spec_hash] = plan
    return plan


def _progress(job: JobView | Job, plan: Plan | None) -> Progress:
    cycle, epoch = job.progress_cycle, job.progress_epoch
    epochs = None
    if plan is not None and cycle is not None:
        epochs = plan.dense_epochs if cycle == 0 else plan.epochs_per_cycle
    elapsed = None
    if job.started_at is not None:
        end = as_utc(job.finished_at) if job.finished_at else utcnow()
        elapsed = max(0.0, (end - as_utc(job.started_at)).total_seconds())
    eta = None
    running = job.status in (JobStatus.RUNNING, JobStatus.CANCELLING)
    if running and plan is not None and cycle is not None and elapsed:
        total = plan.dense_epochs + plan.cycles * plan.epochs_per_cycle
        done = (epoch or 0) if cycle == 0 else plan.dense_epochs
        if cycle > 0:
            done += (cycle - 1) * plan.epochs_per_cycle + (epoch or 0)
        if 0 < done <= total:
            eta = elapsed * (total - done) / done
    return Progress(
        cycle=cycle,
        cycles=plan.cycles if plan else None,
        epoch=epoch,
        epochs=epochs,
        sparsity=job.progress_sparsity,
        best_accuracy=job.best_accuracy,
        elapsed_seconds=elapsed,
        eta_seconds=eta,
        note=job.progress_note if running else None,  # a lost attempt's note is stale
    )


def progress_of(job: Job) -> Progress:
    """A job row's progress (a study reads its members as rows)."""
    return _progress(job, _parse_plan(job.spec_hash, job.spec))


def _summary_fields(job: JobView, plan: Plan | None) -> dict:
    return {
        **{name: getattr(job, name) for name in _VIEW_FIELDS},
        "model": plan.model if plan else None,
        "dataset": plan.dataset if plan else None,
        "schedule": plan.schedule if plan else None,
        "progress": _progress(job, plan),
    }


def summaries(session: Session, jobs: list[JobView]) -> list[JobSummary]:
    """The list page's items; specs are read only for hashes not seen before."""
    plans: dict[str, Plan | None] = {}
    for job in jobs:
        with contextlib.suppress(KeyError):
            plans[job.spec_hash] = _PLANS[job.spec_hash]
    unseen = {job.spec_hash for job in jobs} - plans.keys()
    if unseen:
        for spec_hash, spec in views.specs_by_hash(session, unseen).items():
            plans[spec_hash] = _parse_plan(spec_hash, spec)
    return [JobSummary(**_summary_fields(job, plans.get(job.spec_hash))) for job in jobs]


def _queue(job: JobView) -> QueueInfo:
    if job.ahead is None:
        return QueueInfo(position=None, reason=job.queue_reason)
    ahead = job.ahead
    default = "next to run" if ahead == 0 else f"{ahead} job{'s' if ahead > 1 else ''} ahead"
    return QueueInfo(position=ahead + 1, reason=job.queue_reason or default)


def detail(session: Session, job_id: int, reader: Reader | None = None) -> JobOut:
    """The job as GET /v1/jobs/{id} shows it, read in one statement; 404 if
    ``reader`` may not see it."""
    job = views.job_view(session, job_id)
    if job is None or (reader is not None and not reader.may_read(job.owner_id)):
        raise not_found("job")
    assert job.spec is not None  # the detail view reads the spec
    return JobOut(
        **_summary_fields(job, _parse_plan(job.spec_hash, job.spec)),
        spec=job.spec,
        resources=Resources(cpus=job.cpus, gpus=job.gpus, memory_gb=job.memory_gb),
        error_message=job.error_message,
        queue=_queue(job),
    )
