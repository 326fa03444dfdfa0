"""Which queued job goes next: priority, then fair share between owners, then age.

The order, for the jobs that fit the free resources:

1. effective priority, high first: the job's priority plus one for every
   ``aging_seconds`` it has waited, so a low-priority job is never starved;
2. its owner's GPU-seconds over the last ``window_seconds`` (running jobs
   included), least first: the owner who used the cluster least goes first;
3. its owner's running jobs, fewest first (fair share among CPU-only jobs,
   and between jobs launched in the same tick);
4. age, oldest first; id breaks ties.

Pure functions over plain values, so the policy is tested without a cluster;
the dispatcher feeds it from the database and claims in its order.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class Candidate:
    """A queued job as the dispatcher ranks it. No field has a default: the
    dispatcher builds it from the queue's columns by name, so a field it does not
    read is an error rather than a silent default."""

    job_id: int
    owner_id: int
    priority: int
    created_at: datetime
    cpus: float
    gpus: float
    dense_identity: str | None  # None: the job shares no dense training


@dataclass(frozen=True)
class Usage:
    """One attempt's hold on the cluster: whose, how many GPUs, from when to when."""

    owner_id: int
    gpus: float
    started_at: datetime
    ended_at: datetime | None  # None: still running


def gpu_seconds(
    usage: Iterable[Usage], now: datetime, window_seconds: float
) -> defaultdict[int, float]:
    """GPU-seconds per owner inside the window ending ``now``."""
    start = now - timedelta(seconds=window_seconds)
    totals: defaultdict[int, float] = defaultdict(float)
    for item in usage:
        begin = max(item.started_at, start)
        end = item.ended_at or now
        if item.gpus > 0 and end > begin:
            totals[item.owner_id] += item.gpus * (end - begin).total_seconds()
    return totals


def effective_priority(candidate: Candidate, now: datetime, aging_seconds: float) -> int:
    waited = max(0.0, (now - candidate.created_at).total_seconds())
    return candidate.priority + int(waited // aging_seconds)


def next_job(
    candidates: Iterable[Candidate],
    *,
    used: Mapping[int, float],
    running: Mapping[int, int],
    now: datetime,
    aging_seconds: float,
) -> Candidate | None:
    """The candidate that goes first, or None when there is none."""

    def key(candidate: Candidate) -> tuple[int, float, int, datetime, int]:
        return (
            -effective_priority(candidate, now, aging_seconds),
            used.get(candidate.owner_id, 0.0),
            running.get(candidate.owner_id, 0),
            candidate.created_at,
            candidate.job_id,
        )

    return min(candidates, key=key, default=None)
