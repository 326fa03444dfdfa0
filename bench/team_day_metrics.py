"""bench/team_day.py's measures, on plain job records (tested in tests/bench/).

Every measure is computed from the jobs' own times, the same way in every
mode: ``submit`` (the benchmark's clock just before it submitted the job) and
the job's **runs**: each run (an attempt) ``start``s when its actor began
running (the resources are held and the work can go on) and ``end``s when the
job finished or the run was killed (preempted: the dispatcher stopped it so
that someone else's job could start; the job goes back to the queue, and its
next run resumes from its last checkpoint). Without preemption a job has one
run. Between consecutive events the state of the cluster is constant, so the
run of the mode is cut into segments at every submit, run start and run end,
and each measure sums over segments.

* A job holds its GPUs inside its runs. It **waits** from ``submit`` to its
  first run's start, and again from the end of a run that did not finish it
  to the next run's start (to the mode's end if there is none). A segment is
  **contended** when at least one job waits in it.
* **Utilisation while work waits**: GPUs held, summed over the contended
  segments times their length, over the capacity times their total length;
  and the same over the segments in which work the quota lets start waits
  (some waiting job fits its user's quota beside what the user holds).
* **Fair share**: in each contended segment, every user with work running or
  waiting demands what it holds plus what it waits for, capped at the GPU
  quota when there is one (the team's own limit); the capacity is divided
  max-min fairly among the demands (water-filling: equal shares, a user
  demanding less than its share gets its demand and the rest is shared
  again). For each user, over the contended segments in which *that user has
  work waiting*, ``received`` sums the GPUs it held and ``fair`` its share;
  ``received / fair`` is 1 when it got exactly its fair share.
* **Fair share by priority**: the same, but the capacity is divided by strict
  priority, as the service's policy is priority first, then fair share within
  a priority: the demands of the highest priority class are water-filled
  first, the next class shares what is left, and so on. A user's class is the
  priority of its jobs (the highest, should it have several). An index
  against equal shares also counts against the priorities a team set on
  purpose; this one does not. A user whose share by priority is nothing (the
  classes above it wanted all of the capacity) has no x, whatever it held,
  and is left out of this index.
* **Jain's index** over the users with ``fair > 0`` (users who had work
  waiting) of x = received / fair: (sum x)^2 / (n * sum x^2), 1 when every
  such user got the same fraction of its fair share, 1/n at worst; one index
  against each of the two fair shares.
* **Quota violations**: the moments at which some user starts holding more
  GPUs than the quota (one per episode: a user above the quota for a while
  counts once), with the GPU-seconds held above it.
* **Waits per priority class**: from submit to the first run's start; the
  waits again after preemptions are their own figure.
* **Preemptions**: runs that ended without the job finishing while the mode
  went on, and the GPU-seconds lost to them: per preempted job, the GPU-seconds
  its ended runs held beyond the work they checkpointed (work done since the
  last checkpoint of a killed run is done again).
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

EPSILON = 1e-9  # fractional GPUs (0.25 four times) must add up to a whole card


Run = tuple[float, float | None]  # (start, end); end None: still running when the mode ended


@dataclass(frozen=True)
class JobRecord:
    user: str
    priority: int
    gpus: float
    submit: float  # seconds since the mode began
    runs: tuple[Run, ...] = ()  # in order; none: never started
    finished: bool = False  # its last run ended with the work done
    work: float = 0.0  # seconds of work credited to its ended runs (checkpointed)

    @property
    def start(self) -> float | None:
        """Its first run's start; None if it never started."""
        return self.runs[0][0] if self.runs else None

    @property
    def preempted_ends(self) -> tuple[float, ...]:
        """When its preempted runs ended: the runs that ended without finishing it."""
        ended = tuple(end for _, end in self.runs if end is not None)
        return ended[:-1] if self.finished else ended

    @property
    def preempted(self) -> int:
        return len(self.preempted_ends)

    def held(self, until: float) -> float:
        """Seconds it held its GPUs, runs cut at ``until``."""
        return sum((until if end is None else end) - start for start, end in self.runs)

    def state(self, moment: float) -> Literal["held", "waiting"] | None:
        """At ``moment``: held, waiting, or neither (not submitted yet, or finished)."""
        if moment < self.submit:
            return None
        for start, end in self.runs:
            if start <= moment and (end is None or moment < end):
                return "held"
        last_end = self.runs[-1][1] if self.runs else None
        if self.finished and last_end is not None and last_end <= moment:
            return None
        return "waiting"


@dataclass(frozen=True)
class Segment:
    begin: float
    end: float
    held: dict[str, float]  # GPUs held per user
    waiting: dict[str, float]  # GPUs waited for per user (users with work waiting only)
    # Per user with work waiting, the fewest GPUs one of its waiting jobs asks.
    smallest: dict[str, float] = field(default_factory=dict)

    @property
    def length(self) -> float:
        return self.end - self.begin


def segments(jobs: Sequence[JobRecord], until: float) -> list[Segment]:
    """The mode from its first submit to ``until``, cut at every event."""
    times = sorted(
        {until}
        | {
            t
            for job in jobs
            for t in (job.submit, *itertools.chain.from_iterable(job.runs))
            if t is not None and t < until
        }
    )
    cut = []
    for begin, end in itertools.pairwise(times):
        middle = (begin + end) / 2
        held: defaultdict[str, float] = defaultdict(float)
        waiting: defaultdict[str, float] = defaultdict(float)
        smallest: dict[str, float] = {}
        for job in jobs:
            state = job.state(middle)
            if state == "held":
                held[job.user] += job.gpus
            elif state == "waiting":
                waiting[job.user] += job.gpus
                smallest[job.user] = min(job.gpus, smallest.get(job.user, job.gpus))
        cut.append(Segment(begin, end, dict(held), dict(waiting), smallest))
    return cut


def utilisation_while_waiting(
    cut: Iterable[Segment], capacity: float, quota: float | None = None
) -> float | None:
    """Held GPU-seconds over capacity-seconds in the contended segments; None if none.

    With ``quota``: only over the segments in which some waiting job fits its
    user's quota beside what the user holds, so that GPUs left idle because
    every waiting job would take its user past the quota (the team's own
    limit, kept on purpose) do not count against the scheduler."""
    held = seconds = 0.0
    for segment in cut:
        startable = [
            user
            for user in segment.waiting
            if quota is None
            or segment.held.get(user, 0.0) + segment.smallest.get(user, 0.0) <= quota + EPSILON
        ]
        if startable:
            held += sum(segment.held.values()) * segment.length
            seconds += segment.length
    return held / (capacity * seconds) if seconds > 0 else None


def contended_seconds(cut: Iterable[Segment]) -> float:
    return sum(segment.length for segment in cut if segment.waiting)


def water_fill(demands: Mapping[str, float], capacity: float) -> dict[str, float]:
    """Max-min fair shares of ``capacity`` among ``demands``."""
    shares = dict.fromkeys(demands, 0.0)
    left, open_users = capacity, sorted(demands, key=lambda user: demands[user])
    while open_users and left > EPSILON:
        equal = left / len(open_users)
        user = open_users[0]
        if demands[user] <= equal + EPSILON:  # wants less than an equal share: give it all
            shares[user] = demands[user]
            left -= demands[user]
            open_users.pop(0)
        else:  # everyone left wants more than an equal share
            for other in open_users:
                shares[other] = equal
            left = 0.0
    return shares


def priority_water_fill(
    demands: Mapping[str, float], priority: Mapping[str, int], capacity: float
) -> dict[str, float]:
    """Strict priority shares: the highest class's demands water-filled first
    from ``capacity``, the next class sharing what is left, and so on."""
    shares: dict[str, float] = {}
    left = capacity
    for level in sorted({priority[user] for user in demands}, reverse=True):
        group = {user: demand for user, demand in demands.items() if priority[user] == level}
        shares.update(water_fill(group, max(0.0, left)))
        left -= sum(shares[user] for user in group)
    return shares


def user_priorities(jobs: Iterable[JobRecord]) -> dict[str, int]:
    """Each user's priority class: the highest priority of its jobs."""
    classes: dict[str, int] = {}
    for job in jobs:
        classes[job.user] = max(job.priority, classes.get(job.user, job.priority))
    return classes


@dataclass(frozen=True)
class Fairness:
    received: dict[str, float]  # GPU-seconds held while the user had work waiting
    fair: dict[str, float]  # its fair share of those segments, GPU-seconds
    jain: float | None  # over the users with fair > 0; None if none

    def ratio(self, user: str) -> float | None:
        fair = self.fair.get(user, 0.0)
        return self.received.get(user, 0.0) / fair if fair > 0 else None


def fairness(
    cut: Iterable[Segment],
    capacity: float,
    quota: float | None,
    priority: Mapping[str, int] | None = None,
) -> Fairness:
    """Received against fair share: equal shares, or by strict priority when
    ``priority`` (each user's class, ``user_priorities``) is given."""
    received: defaultdict[str, float] = defaultdict(float)
    fair: defaultdict[str, float] = defaultdict(float)
    for segment in cut:
        if not segment.waiting:
            continue
        demands = {
            user: segment.held.get(user, 0.0) + segment.waiting.get(user, 0.0)
            for user in set(segment.held) | set(segment.waiting)
        }
        if quota is not None:
            demands = {user: min(demand, quota) for user, demand in demands.items()}
        if priority is None:
            shares = water_fill(demands, capacity)
        else:
            shares = priority_water_fill(demands, priority, capacity)
        for user in segment.waiting:
            received[user] += segment.held.get(user, 0.0) * segment.length
            fair[user] += shares[user] * segment.length
    ratios = [received[user] / fair[user] for user in fair if fair[user] > 0]
    return Fairness(dict(received), dict(fair), jain(ratios))


def jain(values: Sequence[float]) -> float | None:
    """Jain's fairness index: (sum x)^2 / (n sum x^2); None for no values."""
    squares = sum(value * value for value in values)
    if not values or squares == 0:
        return None
    return sum(values) ** 2 / (len(values) * squares)


@dataclass(frozen=True)
class QuotaViolations:
    episodes: int  # times some user went above the quota
    over_gpu_seconds: float  # GPU-seconds held above it, all users
    most_held: float  # the most GPUs one user held at once


def quota_violations(cut: Sequence[Segment], quota: float | None) -> QuotaViolations:
    most = max((gpus for segment in cut for gpus in segment.held.values()), default=0.0)
    if quota is None:
        return QuotaViolations(0, 0.0, most)
    episodes, over = 0, 0.0
    above_before: set[str] = set()
    for segment in cut:
        above = {user for user, gpus in segment.held.items() if gpus > quota + EPSILON}
        episodes += len(above - above_before)
        over += sum(segment.held[user] - quota for user in above) * segment.length
        above_before = above
    return QuotaViolations(episodes, over, most)


@dataclass(frozen=True)
class Waits:
    count: int
    not_started: int  # waits cut short by the mode's end (counted as waited until then)
    p50: float
    p95: float
    max: float
    preempted: int = 0  # jobs preempted at least once
    again_seconds: float = 0.0  # all waits again after preemptions, summed (to the mode's end)
    again_max: float = 0.0  # the most one job waited again, all its preemptions


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank quantile (the smallest value with at least ``q`` of them at or below)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def waited_again(job: JobRecord, until: float) -> float:
    """Seconds the job waited after its preempted runs: from each run that did
    not finish it to the next run's start, or to ``until``."""
    # Only the last run can lack an end, so preempted run i is followed by run i + 1.
    starts = [start for start, _ in job.runs[1:]] + [until]
    ends = job.preempted_ends
    return sum(max(0.0, later - end) for end, later in zip(ends, starts, strict=False))


def waits_by_priority(jobs: Iterable[JobRecord], until: float) -> dict[int, Waits]:
    """Submit to first start per priority class, high priority first; and the
    waits again after preemptions."""
    by_class: defaultdict[int, list[float]] = defaultdict(list)
    again_by_class: defaultdict[int, list[float]] = defaultdict(list)
    open_by_class: defaultdict[int, int] = defaultdict(int)
    for job in jobs:
        start = job.start if job.start is not None else until
        by_class[job.priority].append(max(0.0, start - job.submit))
        open_by_class[job.priority] += job.start is None
        if job.preempted:
            again_by_class[job.priority].append(waited_again(job, until))
    return {
        priority: Waits(
            len(waits),
            open_by_class[priority],
            percentile(waits, 0.5),
            percentile(waits, 0.95),
            max(waits),
            len(again_by_class[priority]),
            sum(again_by_class[priority]),
            max(again_by_class[priority], default=0.0),
        )
        for priority, waits in sorted(by_class.items(), reverse=True)
    }


@dataclass(frozen=True)
class Preemptions:
    runs: int  # runs that ended without finishing their job, before the mode's end
    jobs: int  # jobs preempted at least once
    lost_gpu_seconds: float  # held by the preempted jobs' ended runs beyond their checkpoints


def preemptions(jobs: Iterable[JobRecord]) -> Preemptions:
    """Preemptions, and the GPU-seconds lost to them: per preempted job, its
    ended runs' GPU-seconds minus the work credited to them (``work``)."""
    runs = count = 0
    lost = 0.0
    for job in jobs:
        if not job.preempted:
            continue
        runs += job.preempted
        count += 1
        ended = sum(end - start for start, end in job.runs if end is not None)
        lost += job.gpus * max(0.0, ended - job.work)
    return Preemptions(runs, count, lost)


def occupancy(
    jobs: Iterable[JobRecord], users: Sequence[str], until: float
) -> tuple[list[float], list[list[float]]]:
    """Step series for the plot: the event times, and per user the GPUs held from
    each time to the next (``users``' order)."""
    jobs = list(jobs)
    cut = segments(jobs, until)
    times = [segment.begin for segment in cut] + ([cut[-1].end] if cut else [])
    series = [[segment.held.get(user, 0.0) for segment in cut] + [0.0] for user in users]
    return times, series
