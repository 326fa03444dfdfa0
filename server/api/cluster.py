"""``GET /v1/cluster``: the cluster's size, who holds it, fair share, and the queue.

A handful of statements, whatever the queue's length: the recorded capacity
(one row); holdings per owner, queued jobs per owner and per reason (grouped
counts); the GPU attempts of the fair-share window (the dispatcher's own
read, server/jobs/usage.py); the running jobs, as many as the cluster holds,
for their ETAs; and the first ``HEAD`` queued jobs, whose starts
server/jobs/forecast.py estimates.

Under ``SILO_READ_ACCESS=owner`` a user sees the cluster's size, its use and
the queue's length as everyone does, but only their own row of owners, their
own jobs' reasons and their own jobs among the head: other users' names, job
ids and reasons (a reason may name another job) stay hidden. The estimates
are still made over everyone's jobs, which is what a user's job waits behind.

The answer moves with the clock (GPU-seconds, ETAs) and with the capacity
record, which no change key names, so it is read afresh for every request;
its ETag still spares a poll the body while nothing changed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter, Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session, load_only, raiseload

from server.api.access import Reader, ReaderDep
from server.api.conditional import NOT_MODIFIED, IfNoneMatch, answer_afresh
from server.api.deps import SessionDep, SettingsDep
from server.api.errors import documented
from server.api.job_out import progress_of
from server.api.routing import ApiRoute
from server.db.models import Job, User, utcnow
from server.jobs import cluster, forecast, usage
from server.jobs.cluster import Capacity
from server.jobs.forecast import Ask, Estimate, Release
from server.jobs.views import QUEUE_ORDER
from server.settings import Settings
from silo_contract.cluster import (
    CapacityOut,
    ClusterOut,
    ClusterResources,
    FairShareOut,
    OwnerUsage,
    QueuedEstimate,
    QueueOut,
    ReasonCount,
    UseOut,
)
from silo_contract.status import JobStatus

HEAD = 20  # queued jobs whose start is estimated

router = APIRouter(prefix="/v1", tags=["cluster"], route_class=ApiRoute, responses=documented(401))


@router.get("/cluster", response_model=ClusterOut, responses=NOT_MODIFIED)
def read_cluster(
    session: SessionDep,
    reader: ReaderDep,
    settings: SettingsDep,
    if_none_match: IfNoneMatch = None,
) -> Response:
    """The cluster's size and what is free; each owner's use against fair share and
    the GPU quota; the queue by reason; and the head of the queue with estimated
    starts (from the running jobs' ETAs, in the queue's order; the dispatcher also
    weighs fair share and aging, so they are estimates). Any user may ask; under
    ``SILO_READ_ACCESS=owner`` owners, reasons and the head are the caller's own."""
    return answer_afresh(cluster_view(session, reader, settings), if_none_match)


def cluster_view(
    session: Session, reader: Reader, settings: Settings, now: datetime | None = None
) -> ClusterOut:
    """The cluster as ``reader`` may see it at ``now`` (the module says what is read)."""
    now = now or utcnow()
    found = cluster.measured(session)
    held = usage.holdings(session)
    used = usage.window_gpu_seconds(session, now, settings.fair_share_window_seconds)
    queued = dict(session.execute(_QUEUED_BY_OWNER).all())
    head = session.execute(_HEAD).all()
    total = usage.Holding(
        sum(h.jobs for h in held.values()),
        sum(h.cpus for h in held.values()),
        sum(h.gpus for h in held.values()),
    )
    capacity = found[0] if found is not None else None
    in_use = UseOut(
        jobs=total.jobs,
        cpus=total.cpus,
        gpus=total.gpus,
        free_cpus=capacity.total_cpus - total.cpus if capacity else None,
        free_gpus=capacity.total_gpus - total.gpus if capacity else None,
    )
    if found is not None and cluster.is_fresh(found[1], now):
        estimates = _estimates(session, head, found[0], in_use, held, settings, now)
    else:  # no dispatcher measures, so none starts anything
        estimates = [Estimate(None, forecast.NO_CAPACITY) for _ in head]
    return ClusterOut(
        scope="all" if reader.only_owner is None else "own",
        capacity=_capacity(found, now),
        in_use=in_use,
        fair_share=FairShareOut(
            window_seconds=settings.fair_share_window_seconds,
            gpu_quota=settings.owner_gpu_quota,
        ),
        owners=_owners(session, reader, held, used, queued),
        queue=QueueOut(
            queued=sum(queued.values()),
            by_reason=_by_reason(session, reader),
            head=[
                _queued_estimate(position, row, estimate)
                for position, (row, estimate) in enumerate(zip(head, estimates, strict=True), 1)
                if reader.may_read(row.owner_id)
            ],
        ),
    )


# --- the statements, built once ------------------------------------------------

_QUEUED = Job.status == JobStatus.QUEUED.value
_QUEUED_BY_OWNER = select(Job.owner_id, func.count()).where(_QUEUED).group_by(Job.owner_id)
_HEAD = (
    select(
        Job.id,
        Job.name,
        Job.owner_id,
        User.name.label("owner"),
        Job.priority,
        Job.cpus,
        Job.gpus,
        Job.memory_gb,
        Job.queue_reason,
    )
    .join(User, User.id == Job.owner_id)
    .where(_QUEUED)
    .order_by(*QUEUE_ORDER)
    .limit(HEAD)
)
# The running jobs with what progress_of counts their ETA from, and nothing else:
# no spec, no tags.
_RUNNING = (
    select(Job)
    .options(
        load_only(
            Job.owner_id,
            Job.cpus,
            Job.gpus,
            Job.status,
            Job.started_at,
            Job.finished_at,
            Job.progress_cycle,
            Job.progress_epoch,
            Job.progress_sparsity,
            Job.best_accuracy,
            Job.progress_note,
            Job.planned_cycles,
            Job.dense_epochs,
            Job.epochs_per_cycle,
        ),
        raiseload("*"),
    )
    .where(Job.status.in_(usage.HOLDING))
)


# --- the parts of the answer ---------------------------------------------------


def _capacity(found: tuple[Capacity, datetime] | None, now: datetime) -> CapacityOut:
    if found is None:
        return CapacityOut(state="unknown")
    capacity, measured_at = found
    return CapacityOut(
        state="fresh" if cluster.is_fresh(measured_at, now) else "stale",
        measured_at=measured_at,
        nodes=capacity.nodes,
        total=ClusterResources(
            cpus=capacity.total_cpus, gpus=capacity.total_gpus, memory_gb=capacity.total_memory_gb
        ),
        largest_node=ClusterResources(
            cpus=capacity.largest_cpus,
            gpus=capacity.largest_gpus,
            memory_gb=capacity.largest_memory_gb,
        ),
    )


def _owners(
    session: Session,
    reader: Reader,
    held: Mapping[int, usage.Holding],
    used: Mapping[int, float],
    queued: Mapping[int, int],
) -> list[OwnerUsage]:
    """Every owner who holds, queues or used GPUs lately (the reader's own only,
    under the owner policy), fewest GPU-seconds first."""
    ids = [owner for owner in {*held, *used, *queued} if reader.may_read(owner)]
    if not ids:
        return []
    names = dict(session.execute(select(User.id, User.name).where(User.id.in_(ids))).all())
    everyone = sum(used.values())
    nothing = usage.Holding(0, 0.0, 0.0)
    rows = [
        OwnerUsage(
            owner=names[owner],
            running=held.get(owner, nothing).jobs,
            cpus=held.get(owner, nothing).cpus,
            gpus=held.get(owner, nothing).gpus,
            queued=queued.get(owner, 0),
            gpu_seconds=used.get(owner, 0.0),
            share=used.get(owner, 0.0) / everyone if everyone > 0 else None,
        )
        for owner in ids
    ]
    return sorted(rows, key=lambda row: (row.gpu_seconds, row.owner))


def _by_reason(session: Session, reader: Reader) -> list[ReasonCount]:
    query = select(Job.queue_reason, func.count()).where(_QUEUED).group_by(Job.queue_reason)
    if reader.only_owner is not None:
        query = query.where(Job.owner_id == reader.only_owner)
    counts = [ReasonCount(reason=reason, jobs=jobs) for reason, jobs in session.execute(query)]
    return sorted(counts, key=lambda count: (-count.jobs, count.reason or ""))


def _estimates(
    session: Session,
    head: Sequence[Any],
    capacity: Capacity,
    in_use: UseOut,
    held: Mapping[int, usage.Holding],
    settings: Settings,
    now: datetime,
) -> list[Estimate]:
    """The head's estimated starts (server/jobs/forecast.py), from what is free now
    and the running jobs' ETAs."""
    releases = []
    for job in session.scalars(_RUNNING):
        eta = progress_of(job).eta_seconds
        if eta is not None:
            releases.append(Release(now + timedelta(seconds=eta), job.owner_id, job.cpus, job.gpus))
    asks = [
        Ask(
            job.owner_id,
            job.cpus,
            job.gpus,
            fits_a_node=not cluster.shortfalls(
                capacity, cpus=job.cpus, gpus=job.gpus, memory_gb=job.memory_gb
            ),
        )
        for job in head
    ]
    return forecast.estimate_starts(
        asks,
        now=now,
        free_cpus=capacity.total_cpus - in_use.cpus,
        free_gpus=capacity.total_gpus - in_use.gpus,
        held_gpus={owner: holding.gpus for owner, holding in held.items()},
        releases=releases,
        gpu_quota=settings.owner_gpu_quota,
    )


def _queued_estimate(position: int, job: Any, estimate: Estimate) -> QueuedEstimate:
    return QueuedEstimate(
        position=position,
        id=job.id,
        name=job.name,
        owner=job.owner,
        priority=job.priority,
        cpus=job.cpus,
        gpus=job.gpus,
        reason=job.queue_reason,
        # To the second: an estimate carries no more precision than that.
        estimated_start=estimate.start.replace(microsecond=0) if estimate.start else None,
        unknown_because=estimate.unknown_because,
    )
