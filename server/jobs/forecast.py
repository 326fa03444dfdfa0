"""When the jobs at the head of the queue may start: an estimate, explained.

The simulation, on plain values (so it is tested without a database):

1. the free CPUs and GPUs now are the cluster's total less what the running
   jobs hold;
2. each running job gives its CPUs and GPUs back at its ETA (counted from
   its progress, server/api/job_out.progress_of); one without an ETA keeps
   them for as long as the simulation looks;
3. the queued jobs are taken in the queue's order (priority, then age:
   server/jobs/views.QUEUE_ORDER), each starting at the earliest time, no
   earlier than the job before it, at which its request fits what is free
   and its owner's GPU quota; a started job then holds its request for good,
   since a job that has not run has no ETA.

A job gets no estimate (None, with the reason) when no node can hold it (it
never starts, and holds nobody up), when what it waits for is held by jobs
whose end is unknown, or when a job ahead of it waits so: the simulation
keeps the queue's order, so nothing behind an unknown start is known either.

It is an estimate in three ways. The dispatcher's real order also weighs
fair share between owners and lifts jobs as they age (server/scheduling.py),
and it starts a smaller job behind a waiting one when that one fits (the
simulation does not overtake). The resources are pooled, although an
attempt runs on one node and the dispatcher places GPUs card by card
(server/gpu_cards.py). And an ETA is the job's pace so far carried forward.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

# Fractional GPUs (0.25 four times) must add up to a whole card.
EPSILON = 1e-9

NO_CAPACITY = "the cluster's size is not known: no dispatcher has measured it lately"
UNFIT = "no node of the cluster can hold it"
BEHIND_UNKNOWN = "a job ahead of it has no estimate"
HELD_UNKNOWN = "needs resources held by jobs with no known end (no ETA yet, or queued ahead)"


@dataclass(frozen=True)
class Release:
    """A running job's CPUs and GPUs, free again at ``at`` (its ETA)."""

    at: datetime
    owner_id: int
    cpus: float
    gpus: float


@dataclass(frozen=True)
class Ask:
    """A queued job's request, in queue order."""

    owner_id: int
    cpus: float
    gpus: float
    fits_a_node: bool = True


@dataclass(frozen=True)
class Estimate:
    start: datetime | None
    unknown_because: str | None = None  # why ``start`` is None


def estimate_starts(
    asks: Sequence[Ask],
    *,
    now: datetime,
    free_cpus: float,
    free_gpus: float,
    held_gpus: Mapping[int, float],
    releases: Iterable[Release],
    gpu_quota: float | None,
) -> list[Estimate]:
    """Each ask's estimated start, in the order given (the module says how)."""
    pending = sorted(releases, key=lambda release: release.at)
    held: defaultdict[int, float] = defaultdict(float, held_gpus)
    cpus, gpus, clock, next_release = free_cpus, free_gpus, now, 0

    def fits(ask: Ask) -> bool:
        within_quota = (
            gpu_quota is None
            or ask.gpus == 0
            or held[ask.owner_id] + ask.gpus <= gpu_quota + EPSILON
        )
        return ask.cpus <= cpus + EPSILON and ask.gpus <= gpus + EPSILON and within_quota

    estimates: list[Estimate] = []
    blocked = False
    for ask in asks:
        if not ask.fits_a_node:  # it never starts, so it holds nobody up
            estimates.append(Estimate(None, UNFIT))
            continue
        if blocked:
            estimates.append(Estimate(None, BEHIND_UNKNOWN))
            continue
        # Releases are taken in time order until the ask fits; the clock only
        # moves forward, so the queue's order is kept.
        while not fits(ask) and next_release < len(pending):
            release = pending[next_release]
            next_release += 1
            clock = max(clock, release.at)
            cpus, gpus = cpus + release.cpus, gpus + release.gpus
            held[release.owner_id] -= release.gpus
        if not fits(ask):
            estimates.append(Estimate(None, HELD_UNKNOWN))
            blocked = True
            continue
        estimates.append(Estimate(clock))
        cpus, gpus = cpus - ask.cpus, gpus - ask.gpus
        held[ask.owner_id] += ask.gpus
    return estimates
