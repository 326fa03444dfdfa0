"""A job as the API answers it: the summary a list shows, the detail a poll shows.

Both carry the job's progress, counted in the job's plan (its planned cycles
and epochs), which the job stores beside its spec at submit
(repository.queued_columns): neither reads or parses a spec.
"""

from __future__ import annotations

from typing import NamedTuple

from sqlalchemy.orm import Session

from server.api.access import Reader
from server.api.errors import not_found
from server.db.models import Job, utcnow
from server.jobs import views
from server.jobs.views import JobView
from silo_contract.jobs import (
    QUEUE_COUNT_LIMIT,
    JobOut,
    JobSummary,
    Progress,
    QueueInfo,
    Resources,
)
from silo_contract.status import JobStatus

# The summary fields read straight off the view (its plan's names among them).
_VIEW_FIELDS = tuple(name for name in JobSummary.model_fields if name != "progress")


class Plan(NamedTuple):
    """The job's planned cycles and epochs, stored at submit."""

    cycles: int
    dense_epochs: int
    epochs_per_cycle: int


def _plan(job: JobView | Job) -> Plan | None:
    """None for a job stored without a plan (one whose spec could not be read)."""
    cycles, dense, per_cycle = job.planned_cycles, job.dense_epochs, job.epochs_per_cycle
    if cycles is None or dense is None or per_cycle is None:
        return None
    return Plan(cycles, dense, per_cycle)


def progress_of(job: JobView | Job) -> Progress:
    """The job's progress; a study reads its members as rows, lists and polls as views."""
    plan = _plan(job)
    cycle, epoch = job.progress_cycle, job.progress_epoch
    epochs = None
    if plan is not None and cycle is not None:
        epochs = plan.dense_epochs if cycle == 0 else plan.epochs_per_cycle
    elapsed = None
    if job.started_at is not None:
        end = job.finished_at or utcnow()
        elapsed = max(0.0, (end - job.started_at).total_seconds())
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


def _summary_fields(job: JobView) -> dict:
    return {**{name: getattr(job, name) for name in _VIEW_FIELDS}, "progress": progress_of(job)}


def summaries(jobs: list[JobView]) -> list[JobSummary]:
    """The list page's items."""
    return [JobSummary(**_summary_fields(job)) for job in jobs]


def _queue(job: JobView) -> QueueInfo:
    if job.ahead is None:
        return QueueInfo(position=None, reason=job.queue_reason)
    ahead = min(job.ahead, QUEUE_COUNT_LIMIT)
    more = job.ahead > QUEUE_COUNT_LIMIT
    if more:
        default = f"over {QUEUE_COUNT_LIMIT:,} jobs ahead"
    else:
        default = "next to run" if ahead == 0 else f"{ahead} job{'s' if ahead > 1 else ''} ahead"
    return QueueInfo(position=ahead + 1, more_ahead=more, reason=job.queue_reason or default)


def detail(session: Session, job_id: int, reader: Reader | None = None) -> JobOut:
    """The job as GET /v1/jobs/{id} shows it, read in one statement; 404 if
    ``reader`` may not see it."""
    return detail_of(readable_view(session, job_id, reader))


def readable_view(session: Session, job_id: int, reader: Reader | None = None) -> JobView:
    """The job's detail view (one statement); 404 if ``reader`` may not see it."""
    job = views.job_view(session, job_id)
    if job is None or (reader is not None and not reader.may_read(job.owner_id)):
        raise not_found("job")
    return job


def detail_of(job: JobView) -> JobOut:
    """A job's detail view (views.job_view's, or a submit's of the job it stored)
    as the API shows it, its progress counted to now (no database read)."""
    assert job.spec is not None  # the detail view reads the spec
    return JobOut(
        **_summary_fields(job),
        spec=job.spec,
        resources=Resources(cpus=job.cpus, gpus=job.gpus, memory_gb=job.memory_gb),
        error_message=job.error_message,
        queue=_queue(job),
    )
