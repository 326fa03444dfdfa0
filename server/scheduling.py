"""Which queued job goes next: priority, then fair share between owners, then age.

The order, for the jobs that fit the free resources:

1. effective priority, high first: the job's priority plus one for every
   ``aging_seconds`` the longest-waiting job of that priority has waited, so
   a low-priority class is never starved, and within a class fair share, not
   each job's age, decides (``class_priorities``);
2. its owner's GPU-seconds over the last ``window_seconds`` (running jobs
   included), least first: the owner who used the cluster least goes first;
3. its owner's running jobs, fewest first (fair share among CPU-only jobs,
   and between jobs launched in the same tick);
4. age, oldest first; id breaks ties.

Pure functions over plain values, so the policy is tested without a cluster;
the dispatcher feeds it from the database and claims in its order.
``LaunchOrder`` gives ``next_job``'s choices one after another for a tick that
launches several jobs, without ranking every candidate again for each; its
``first`` looks at the next choice without taking it, so the dispatcher can
hold GPU cards for a job that does not fit them (server/gpu_cards.py).

``FifoOrder`` is the plain alternative (``SILO_DISPATCH_ORDER=fifo``): oldest
first among the jobs that fit, no priority, no aging, no fair share; a job
too big for what is free now is passed over, as in the ranked order.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol


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


def class_priorities(
    candidates: Iterable[Candidate], now: datetime, aging_seconds: float
) -> dict[int, int]:
    """Each priority class's effective priority: the class's priority plus one
    for every ``aging_seconds`` its longest-waiting candidate has waited.

    Aging lifts a class, not a job: all jobs of one priority rank alike, so
    fair share decides between their owners however long each job waited
    (with a job's own age lifting it, a burst's older jobs outranked every
    newer job of their class within one aging step, and fair share only
    separated jobs submitted within the same step). A class starved by higher
    ones still rises above them in time."""
    oldest: dict[int, datetime] = {}
    for candidate in candidates:
        known = oldest.get(candidate.priority)
        if known is None or candidate.created_at < known:
            oldest[candidate.priority] = candidate.created_at
    return {
        priority: priority + int(max(0.0, (now - created_at).total_seconds()) // aging_seconds)
        for priority, created_at in oldest.items()
    }


RankKey = tuple[int, float, int, datetime, int]


def rank_key(
    candidate: Candidate,
    *,
    classes: Mapping[int, int],
    used: Mapping[int, float],
    running: Mapping[int, int],
) -> RankKey:
    """Where ``candidate`` stands in the ranked order, least first: its class's
    effective priority, its owner's GPU-seconds and running jobs, its age, its id."""
    return (
        -classes[candidate.priority],
        used.get(candidate.owner_id, 0.0),
        running.get(candidate.owner_id, 0),
        candidate.created_at,
        candidate.job_id,
    )


def next_job(
    candidates: Iterable[Candidate],
    *,
    used: Mapping[int, float],
    running: Mapping[int, int],
    now: datetime,
    aging_seconds: float,
    classes: Mapping[int, int] | None = None,
) -> Candidate | None:
    """The candidate that goes first, or None when there is none. ``classes``:
    the classes' effective priorities (``class_priorities``) if counted over a
    larger set of candidates than these, as the dispatcher counts them once a
    tick."""
    candidates = list(candidates)
    if classes is None:
        classes = class_priorities(candidates, now, aging_seconds)

    ranked = classes
    return min(
        candidates,
        key=lambda c: rank_key(c, classes=ranked, used=used, running=running),
        default=None,
    )


class LaunchOrder:
    """``next_job``'s choices, one at a time, among the candidates that ``fits``
    says fit at that moment, as a dispatcher launching several jobs in a tick
    takes them (its free resources and its owners' running jobs change between
    choices; ``running`` is read as it is then).

    Within one owner the order is fixed for the tick: the owner's GPU-seconds
    and running jobs are the same for all its jobs, leaving its class's
    effective priority (counted once, over all the tick's candidates), age and
    id. So each owner's jobs are sorted once, and a choice compares
    only each owner's first job that fits instead of all candidates."""

    def __init__(
        self,
        candidates: Iterable[Candidate],
        *,
        used: Mapping[int, float],
        running: Mapping[int, int],
        now: datetime,
        aging_seconds: float,
    ) -> None:
        self._used, self._running = used, running
        self._now, self._aging_seconds = now, aging_seconds
        candidates = list(candidates)
        self._classes = classes = class_priorities(candidates, now, aging_seconds)
        by_owner: defaultdict[int, list[tuple[int, datetime, int, Candidate]]] = defaultdict(list)
        for candidate in candidates:
            by_owner[candidate.owner_id].append(
                (
                    -classes[candidate.priority],
                    candidate.created_at,
                    candidate.job_id,
                    candidate,
                )
            )
        for jobs in by_owner.values():
            jobs.sort(key=lambda job: job[:3])  # ids are unique: never compares candidates
        self._by_owner = dict(by_owner)

    def ranks_before(self, first: Candidate, then: Candidate) -> bool:
        """Whether ``first`` (one of the tick's candidates) would go before ``then``
        (a running job, were it queued again), with the owners' GPU-seconds and
        running jobs as they are now. ``then`` ages its class as a candidate would."""
        classes = dict(self._classes)
        own = class_priorities([then], self._now, self._aging_seconds)[then.priority]
        classes[then.priority] = max(own, classes.get(then.priority, own))
        used, running = self._used, self._running
        return rank_key(first, classes=classes, used=used, running=running) < rank_key(
            then, classes=classes, used=used, running=running
        )

    def first(self, fits: Callable[[Candidate], bool]) -> Candidate | None:
        """The candidate that goes next among those that ``fits`` accepts now,
        left in the order."""
        found = self._best(fits)
        return None if found is None else self._by_owner[found[0]][found[1]][3]

    def take(self, candidate: Candidate) -> Candidate:
        """Take ``candidate`` out of the order: it is not offered again this tick."""
        jobs = self._by_owner[candidate.owner_id]
        index = next(i for i, job in enumerate(jobs) if job[2] == candidate.job_id)
        return jobs.pop(index)[3]

    def next(self, fits: Callable[[Candidate], bool]) -> Candidate | None:
        """The candidate that goes next among those that fit now, taken out of the
        order (it is not offered again, whether or not its claim succeeds)."""
        found = self._best(fits)
        return None if found is None else self._by_owner[found[0]].pop(found[1])[3]

    def _best(self, fits: Callable[[Candidate], bool]) -> tuple[int, int] | None:
        """(owner, index in the owner's jobs) of the next candidate that fits."""
        best: RankKey | None = None
        best_owner, best_index = 0, 0
        for owner, jobs in self._by_owner.items():
            for index, (_, _, _, candidate) in enumerate(jobs):
                if fits(candidate):
                    key = rank_key(
                        candidate, classes=self._classes, used=self._used, running=self._running
                    )
                    if best is None or key < best:
                        best, best_owner, best_index = key, owner, index
                    break
        return None if best is None else (best_owner, best_index)


class FifoOrder:
    """First come, first served: the oldest candidate that ``fits`` says fits,
    one at a time (ids break ties). The same interface as ``LaunchOrder``, so
    the dispatcher's loop, its free resources and its quota check are the same
    in both orders; only the ranking is off."""

    def __init__(self, candidates: Iterable[Candidate]) -> None:
        self._jobs = sorted(candidates, key=lambda c: (c.created_at, c.job_id))

    def first(self, fits: Callable[[Candidate], bool]) -> Candidate | None:
        """The oldest candidate that fits now, left in the order."""
        return next((candidate for candidate in self._jobs if fits(candidate)), None)

    def take(self, candidate: Candidate) -> Candidate:
        """Take ``candidate`` out of the order."""
        self._jobs.remove(candidate)
        return candidate

    def next(self, fits: Callable[[Candidate], bool]) -> Candidate | None:
        """The oldest candidate that fits now, taken out of the order."""
        candidate = self.first(fits)
        return None if candidate is None else self.take(candidate)


class Order(Protocol):
    """What the dispatcher's loop asks of ``LaunchOrder`` and ``FifoOrder``."""

    def first(self, fits: Callable[[Candidate], bool]) -> Candidate | None: ...

    def take(self, candidate: Candidate) -> Candidate: ...

    def next(self, fits: Callable[[Candidate], bool]) -> Candidate | None: ...
