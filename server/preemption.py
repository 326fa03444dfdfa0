"""Fair-share preemption: which running jobs to stop so that a waiting one can start.

With ``SILO_PREEMPTION=fair-share`` the dispatcher looks, once a tick, at the
first job in the ranked order that waits for GPUs (the one the cards are held
for). Without preemption a job that holds GPUs keeps them until it ends, so
whoever came first on a free cluster (a burst) keeps its lead for a whole job
length while others wait. A running job may be stopped for the waiting one
when all of these hold, after the fair-sharing preemption of Kubernetes' Kueue
and the fair scheduler of Hadoop YARN:

* it belongs to another owner, is not being cancelled, and has run at least
  ``min_runtime_seconds`` (work since its last checkpoint is lost; a floor on
  run time bounds how often that happens);
* its priority is not above the waiting job's;
* the waiting job would go before it in the ranked order were it queued again
  (``LaunchOrder.ranks_before``), so the freed GPUs go to the waiting job and
  not back to the job just stopped;
* its owner, without it, still holds at least as many GPUs as the waiting
  job's owner would with the waiting job. So preemption moves GPUs only from
  an owner holding more to one holding fewer, and never back: after it, the
  stopped job's owner cannot preempt the job that took its GPUs.

Among those, the owners holding the most GPUs lose first, each its newest job
first (the least work lost), until the waiting job fits the cards as Ray
places them; victims it turns out not to need are then spared. If no such set
makes it fit, nothing is stopped. Pure functions over plain values: the
dispatcher feeds them and does the stopping (server/jobs/attempts.py's
``preempt_attempt``, then the actor killed).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from server.placements import AttemptKey
from server.scheduling import Candidate

EPSILON = 1e-9  # GPU fractions: 0.25 four times is one GPU


@dataclass(frozen=True)
class RunningJob:
    """A running attempt that holds GPUs, as preemption weighs it."""

    key: AttemptKey  # (job id, attempt number)
    owner_id: int
    priority: int
    gpus: float
    created_at: datetime  # the job's: where it would rank, queued again
    started_at: datetime  # the attempt's
    cancelling: bool

    def as_candidate(self) -> Candidate:
        """The job as it would be ranked if it were queued again."""
        job_id, _ = self.key
        return Candidate(
            job_id=job_id,
            owner_id=self.owner_id,
            priority=self.priority,
            created_at=self.created_at,
            cpus=0.0,
            gpus=self.gpus,
            dense_identity=None,
        )


def victims(
    waiting: Candidate,
    running: Sequence[RunningJob],
    *,
    held: Mapping[int, float],
    now: datetime,
    min_runtime_seconds: float,
    ranks_before: Callable[[Candidate, Candidate], bool],
    fits_without: Callable[[Sequence[RunningJob]], bool],
) -> list[RunningJob]:
    """The running jobs to stop so that ``waiting`` can start; empty when none may.

    ``held``: GPUs each owner's running jobs hold now. ``fits_without(jobs)``:
    whether ``waiting`` would fit the cards were ``jobs`` stopped.
    """
    wanted = held.get(waiting.owner_id, 0.0) + waiting.gpus
    eligible = [
        job
        for job in running
        if job.owner_id != waiting.owner_id
        and not job.cancelling
        and job.gpus > 0
        and job.priority <= waiting.priority
        and (now - job.started_at).total_seconds() >= min_runtime_seconds
        and ranks_before(waiting, job.as_candidate())
    ]
    # The owners holding most first; within one, the newest start first.
    eligible.sort(key=lambda job: (-held.get(job.owner_id, 0.0), -job.started_at.timestamp()))
    left = dict(held)
    chosen: list[RunningJob] = []
    for job in eligible:
        if left.get(job.owner_id, 0.0) - job.gpus < wanted - EPSILON:
            continue  # its owner would end up holding less than the waiting one's
        chosen.append(job)
        left[job.owner_id] = left.get(job.owner_id, 0.0) - job.gpus
        if fits_without(chosen):
            return _spare_unneeded(chosen, fits_without)
    return []


def _spare_unneeded(
    chosen: list[RunningJob], fits_without: Callable[[Sequence[RunningJob]], bool]
) -> list[RunningJob]:
    """``chosen`` less the jobs whose GPUs the waiting job turns out not to need
    (on another card than the one it gets), the first chosen tried first."""
    needed = list(chosen)
    for job in chosen:
        rest = [other for other in needed if other is not job]
        if rest and fits_without(rest):
            needed = rest
    return needed
