"""Who holds the cluster now and who used it lately, read from the jobs and attempts.

The dispatcher ranks the queue by these figures (fair share and the per-owner
GPU quota, server/scheduling.py) and ``GET /v1/cluster`` shows them: both read
them here, so what a user is shown is what the dispatcher went by.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from server.db.models import Job, JobAttempt
from server.scheduling import Usage, gpu_seconds
from silo_contract.status import JobStatus

# A cancelling job still runs (and holds its resources) until its worker stops.
HOLDING = (JobStatus.RUNNING.value, JobStatus.CANCELLING.value)


def usage_since(session: Session, since: datetime) -> list[Usage]:
    """GPU attempts still running or ended after ``since`` (older ones cannot count)."""
    rows = session.execute(
        select(Job.owner_id, Job.gpus, JobAttempt.started_at, JobAttempt.ended_at)
        .join(JobAttempt, JobAttempt.job_id == Job.id)
        .where(Job.gpus > 0, or_(JobAttempt.ended_at.is_(None), JobAttempt.ended_at > since))
    )
    return [Usage(owner, gpus, started, ended) for owner, gpus, started, ended in rows]


def window_gpu_seconds(
    session: Session, now: datetime, window_seconds: float
) -> defaultdict[int, float]:
    """GPU-seconds per owner over the fair-share window ending ``now``."""
    since = now - timedelta(seconds=window_seconds)
    return gpu_seconds(usage_since(session, since), now, window_seconds)


@dataclass(frozen=True)
class Holding:
    """What one owner's running (and cancelling) jobs hold."""

    jobs: int
    cpus: float
    gpus: float


def holdings(session: Session) -> dict[int, Holding]:
    """Running jobs, CPUs and GPUs held, per owner (one grouped read)."""
    rows = session.execute(
        select(Job.owner_id, func.count(), func.sum(Job.cpus), func.sum(Job.gpus))
        .where(Job.status.in_(HOLDING))
        .group_by(Job.owner_id)
    )
    return {owner: Holding(count, cpus or 0.0, gpus or 0.0) for owner, count, cpus, gpus in rows}


def running_by_owner(session: Session) -> tuple[Counter[int], defaultdict[int, float]]:
    """Running jobs and GPUs held, per owner: what the dispatcher ranks and
    checks quotas with, and adds to as it launches within a tick."""
    running: Counter[int] = Counter()
    held: defaultdict[int, float] = defaultdict(float)
    for owner, holding in holdings(session).items():
        running[owner], held[owner] = holding.jobs, holding.gpus
    return running, held
