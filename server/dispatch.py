"""The dispatcher: queued jobs to Ray, and what happens when workers go away.

Every tick it

1. reconciles the running jobs with Ray's named actors, listed once a tick:
   an attempt whose actor is gone without finishing was lost (worker killed,
   node down) and is settled (queued again to resume from its checkpoint, or
   failed after ``max_attempts``); a cancelling job still running after the
   grace period has its actor killed and ends cancelled;
2. ranks the queued jobs that fit the cluster's free CPUs, its GPU cards and
   their owner's GPU quota (server/scheduling.py: priority with aging, then
   fair share between owners, then age), claims them in that order with
   ``claim_job``, which is safe with several dispatchers, and launches each
   in its own detached actor (``SILO_DISPATCH_ORDER=fifo`` takes them oldest
   first instead, ranking off; free resources and the quota still apply);
   GPUs are checked card by card as Ray places them (server/gpu_cards.py,
   fed by server/placements.py), not as the sum Ray reports, and the first
   job in the order that waits for GPUs has the cards it would get soonest
   held for it, so smaller jobs behind it cannot keep overtaking it; with
   ``SILO_PREEMPTION=fair-share``, running jobs of owners who hold more GPUs
   may be stopped for that first job (server/preemption.py): queued again,
   they resume from their checkpoints;
3. writes down why the jobs at the head of the queue still wait; a job that
   no node can hold says so, since no wait would end it.

It also records the Ray nodes' sizes (server/jobs/cluster.py) for the API,
which runs no Ray, to refuse such jobs at submit.

The dispatcher keeps nothing that matters in memory: the database and Ray's
named actors are the state, so a restarted dispatcher (or API server) adopts
the running jobs as they are.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Select,
    Table,
    and_,
    bindparam,
    or_,
    select,
    union,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from server.changes.book import JOBS, job_key
from server.changes.tracking import announce
from server.db.models import Job, JobAttempt, utcnow
from server.db.session import make_session_factory
from server.files import WeightsUnavailableError, weights_path
from server.gpu_cards import GpuCards, demand_shape
from server.jobs import cluster
from server.jobs.attempts import finish_cancel, preempt_attempt, settle_lost_attempt
from server.jobs.claims import claim_job
from server.jobs.cluster import Capacity, shortfalls, unfit_reason
from server.jobs.reports import report_status
from server.jobs.usage import running_by_owner, window_gpu_seconds
from server.jobs.views import QUEUE_ORDER
from server.placements import AttemptKey, Placements
from server.preemption import RunningJob, victims
from server.scheduling import Candidate, FifoOrder, LaunchOrder, Order
from server.settings import Settings
from silo_contract.layout import dense_training
from silo_contract.order import AttemptOrder
from silo_contract.status import JobStatus
from workers import ray_actor

log = logging.getLogger("silo.dispatcher")

# A just-launched actor may not be visible by name for a moment.
LAUNCH_GRACE_SECONDS = 10.0
QUEUE_HEAD = 100  # queued jobs whose waiting reason is kept up to date
CANDIDATES = 1000  # queued jobs the scheduler ranks per tick


@dataclass
class TickReport:
    launched: list[int] = field(default_factory=list)
    lost: list[int] = field(default_factory=list)
    killed: list[int] = field(default_factory=list)
    preempted: list[int] = field(default_factory=list)


class Dispatcher:
    def __init__(self, settings: Settings, sessions: sessionmaker, api_url: str) -> None:
        self.settings, self.sessions, self.api_url = settings, sessions, api_url
        # The tick's reads in autocommit: no BEGIN and ROLLBACK round trips
        # around them (three a tick). Each read is one statement's snapshot, as
        # under PostgreSQL's READ COMMITTED anyway; the writes keep ``sessions``.
        bind = sessions.kw.get("bind")
        self._reads = (
            make_session_factory(bind, read_only=True) if isinstance(bind, Engine) else sessions
        )
        self._launched_at: dict[tuple[int, int], float] = {}
        self._cancelling_since: dict[tuple[int, int], float] = {}
        self._recorded_capacity: Capacity | None = None
        self._recorded_at = 0.0  # monotonic
        self._placements = Placements()

    # --- the loop ------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Tick until ``stop`` is set; a failing tick is logged and retried."""
        while not stop.is_set():
            try:
                self.tick()
            except Exception:  # the database or Ray away for a moment: keep going
                log.exception("dispatcher tick failed; retrying")
            stop.wait(self.settings.dispatch_interval_seconds)

    def tick(self) -> TickReport:
        report = TickReport()
        holding = self._reconcile(report)
        self._dispatch(report, holding)
        return report

    # --- 1. running jobs ----------------------------------------------------------

    def _reconcile(self, report: TickReport) -> list[RunningJob]:
        """Settle the lost attempts and kill the overdue cancels; the running
        attempts left that hold GPUs, in launch order."""
        with self._reads() as session:
            running = session.execute(_RUNNING).all()
        # Ray's named actors in one call (not a lookup per job: 100 running
        # jobs cost 100 round trips, bench/dispatch_tick.py), listed after the
        # read so that an attempt the read saw running is listed unless gone.
        actors = ray_actor.live_actor_names() if running else frozenset()
        now = time.monotonic()
        # Past the grace a launch time decides nothing: forget it, or the dict
        # would keep every attempt this dispatcher ever launched.
        self._launched_at = {
            key: at for key, at in self._launched_at.items() if now - at < LAUNCH_GRACE_SECONDS
        }
        live = {(row.id, row.attempt) for row in running}
        for key in set(self._cancelling_since) - live:
            del self._cancelling_since[key]
        gone: set[tuple[int, int]] = set()  # lost: their actors hold nothing
        for row in running:
            job_id, attempt, status = row.id, row.attempt, row.status
            key = (job_id, attempt)
            if ray_actor.actor_name(job_id, attempt) not in actors:
                if now - self._launched_at.get(key, -LAUNCH_GRACE_SECONDS) < LAUNCH_GRACE_SECONDS:
                    continue
                with self.sessions.begin() as session:
                    outcome = settle_lost_attempt(
                        session,
                        job_id,
                        attempt,
                        max_attempts=self.settings.max_attempts,
                        reason="the worker stopped without finishing",
                    )
                if outcome is not None:
                    log.warning("job %s attempt %s lost: now %s", job_id, attempt, outcome)
                    report.lost.append(job_id)
                self._launched_at.pop(key, None)
                gone.add(key)
            elif status == JobStatus.CANCELLING.value:
                since = self._cancelling_since.setdefault(key, now)
                if now - since >= self.settings.cancel_grace_seconds:
                    ray_actor.kill(job_id, attempt)
                    with self.sessions.begin() as session:
                        if finish_cancel(session, job_id, attempt):
                            report.killed.append(job_id)
                    log.warning("job %s did not stop within the grace period; killed", job_id)
        return [
            RunningJob(
                key=(row.id, row.attempt),
                owner_id=row.owner_id,
                priority=row.priority,
                gpus=row.gpus,
                created_at=row.created_at,
                started_at=row.started_at or row.created_at,
                cancelling=row.status == JobStatus.CANCELLING.value,
            )
            for row in running
            if row.gpus > 0 and (row.id, row.attempt) not in gone
        ]

    # --- 2. queued jobs -----------------------------------------------------------

    def _dispatch(self, report: TickReport, holding: list[RunningJob]) -> None:
        free = ray_actor.free_resources()
        sizes = ray_actor.node_sizes()
        capacity = self._measure_cluster(sizes)
        cards = self._gpu_cards(sizes, holding)
        now = utcnow()
        ranked = self.settings.dispatch_order == "ranked"

        def gpus_fit(c: Candidate) -> bool:
            # Ray's sum too: it also counts GPUs held by what this service did
            # not launch, which the card model cannot see.
            return c.gpus == 0 or (c.gpus <= free["GPU"] and cards.fits(c.gpus))

        preempting = ranked and self.settings.preemption == "fair-share"
        with self._reads() as session:
            # With preemption GPUs may be freed for any job a node could hold.
            gpus = cards.most_on_one_node() if preempting else free["GPU"]
            candidates = self._candidates(session, free["CPU"], gpus)
            if not preempting and any(c.gpus > 0 and gpus_fit(c) for c in candidates):
                # A GPU job can start: read the jobs too big for what is free
                # in sum as well, which it may overtake, so that the first of
                # them in the order has cards held for it (_next_launch).
                candidates = self._candidates(session, free["CPU"], cards.most_on_one_node())
            # Fair share only ranks candidates: with none within the free
            # resources (a full cluster, the usual state with a long queue), or
            # no ranking (fifo), its read, the tick's largest at 100,000
            # finished attempts, is skipped.
            window = self.settings.fair_share_window_seconds
            used = window_gpu_seconds(session, now, window) if candidates and ranked else {}
            running, held = running_by_owner(session)
            training_dense = self._dense_in_progress(session)
        quota = self.settings.owner_gpu_quota

        def may_start(c: Candidate) -> bool:  # all but its GPUs, as launches take from it
            return (
                c.cpus <= free["CPU"]
                and (quota is None or c.gpus == 0 or held[c.owner_id] + c.gpus <= quota)
                and (c.dense_identity is None or c.dense_identity not in training_dense)
            )

        ranking = (
            LaunchOrder(
                candidates,
                used=used,
                running=running,
                now=now,
                aging_seconds=self.settings.priority_aging_seconds,
            )
            if ranked
            else None
        )
        order: Order = ranking or FifoOrder(candidates)
        while (choice := _next_launch(order, cards, may_start, gpus_fit)) is not None:
            with self.sessions.begin() as session:
                claim = claim_job(
                    session,
                    choice.job_id,
                    api_url=self.api_url,
                    artifact_root=self.settings.resolved_artifact_root(),
                )
            if claim is None:
                continue  # another dispatcher took it, or it was cancelled meanwhile
            self._launch(claim)
            report.launched.append(claim.job_id)
            free["CPU"] -= choice.cpus
            free["GPU"] -= choice.gpus
            cards.take(choice.gpus)
            running[choice.owner_id] += 1
            held[choice.owner_id] += choice.gpus
            if choice.dense_identity is not None and not self._dense_cached(choice.dense_identity):
                training_dense[choice.dense_identity] = claim.job_id
        first_waiting = cards.reservation
        # Only in a tick that launched nothing, and only while the cards the
        # model counts free are not enough: a job launched this tick is not in
        # ``holding`` yet, and cards free in the model but not in Ray's sum are
        # being released by an actor just stopped. Either way the model would
        # see room that is not there yet and stop more jobs than needed.
        if (
            first_waiting
            and ranking
            and preempting
            and not report.launched
            and not cards.fits(first_waiting.gpus)
        ):
            waiting = next(c for c in candidates if c.job_id == first_waiting.job_id)
            self._preempt_for(waiting, ranking, holding, held, sizes, free, report)
            for identity in [i for i, job in training_dense.items() if job in report.preempted]:
                del training_dense[identity]  # its job is queued again, training nothing
        self._explain_waits(free, held, training_dense, capacity, cards)

    def _preempt_for(
        self,
        waiting: Candidate,
        ranking: LaunchOrder,
        holding: list[RunningJob],
        held: defaultdict[int, float],
        sizes: dict[str, dict[str, float]],
        free: dict[str, float],
        report: TickReport,
    ) -> None:
        """Stop the running jobs that fair share says ``waiting`` (the first job
        that waits for GPUs) may take GPUs from, if stopping them lets it start
        (server/preemption.py); it starts in a later tick, once Ray has freed them."""

        def fits_without(stopped: Sequence[RunningJob]) -> bool:
            freed = sum(job.gpus for job in stopped)
            cards = self._gpu_cards(sizes, holding, but=frozenset(job.key for job in stopped))
            return waiting.gpus <= free["GPU"] + freed and cards.fits(waiting.gpus)

        chosen = victims(
            waiting,
            holding,
            held=held,
            now=utcnow(),
            min_runtime_seconds=self.settings.preemption_min_runtime_seconds,
            ranks_before=ranking.ranks_before,
            fits_without=fits_without,
        )
        for job in chosen:
            job_id, attempt = job.key
            # Killed first: an attempt that finishes meanwhile keeps its result
            # (the job is no longer running, so nothing is requeued below).
            ray_actor.kill(job_id, attempt)
            with self.sessions.begin() as session:
                stopped = preempt_attempt(
                    session,
                    job_id,
                    attempt,
                    reason=f"its GPUs went to job {waiting.job_id}, whose owner held fewer",
                )
            if stopped:
                log.info("job %s attempt %s preempted for job %s", job_id, attempt, waiting.job_id)
                report.preempted.append(job_id)
                held[job.owner_id] -= job.gpus

    def _measure_cluster(self, sizes: dict[str, dict[str, float]]) -> Capacity | None:
        """The nodes' sizes, recorded for the API when they changed (and every
        REFRESH_SECONDS, so the API can tell a current record from a stale one)."""
        capacity = Capacity.of(sizes.values())
        now = time.monotonic()
        if capacity is not None and (
            capacity != self._recorded_capacity
            or now - self._recorded_at >= cluster.REFRESH_SECONDS
        ):
            with self.sessions.begin() as session:
                cluster.record(session, capacity)
            self._recorded_capacity, self._recorded_at = capacity, now
        return capacity

    def _gpu_cards(
        self,
        sizes: dict[str, dict[str, float]],
        holding: Sequence[RunningJob],
        but: frozenset[AttemptKey] = frozenset(),
    ) -> GpuCards:
        """Each node's cards (Ray makes one per whole GPU a node declares) less
        what the running attempts hold, where they said or else where Ray puts
        it; ``but`` those attempts (jobs preemption would stop). The placements
        are brought up to date for all of ``holding`` either way."""
        known = self._placements.current(held.key for held in holding)
        holding = [held for held in holding if held.key not in but]
        return GpuCards.of(
            {node: int(size.get("GPU", 0.0)) for node, size in sizes.items()},
            [(held.gpus, known.get(held.key)) for held in holding],
        )

    def _dense_cached(self, identity: str) -> bool:
        return dense_training(self.settings.resolved_artifact_root(), identity).exists()

    def _dense_in_progress(self, session: Session) -> dict[str, int]:
        """Dense identity -> the running job training it (not yet in the dense cache).

        A queued job with that dense identity waits for it rather than train the
        same dense network again (a study's members with one seed)."""
        rows = session.execute(
            select(Job.dense_identity, Job.id).where(
                Job.status.in_([JobStatus.RUNNING.value, JobStatus.CANCELLING.value]),
                Job.dense_identity.is_not(None),
                or_(Job.progress_cycle.is_(None), Job.progress_cycle == 0),
            )
        ).all()
        return {
            identity: job_id
            for identity, job_id in rows
            if identity is not None and not self._dense_cached(identity)
        }

    def _candidates(self, session: Session, cpus: float, gpus: float) -> list[Candidate]:
        """The head of the queue and its oldest jobs (which aging may lift), those
        within ``cpus`` and ``gpus``: with the free CPUs and the free GPUs in sum
        (an upper bound of what fits on the cards), no other could be chosen this
        tick, and a full cluster reads no row."""
        rows = session.execute(_CANDIDATES, {"cpus": cpus, "gpus": gpus})
        return [Candidate(*row) for row in rows]

    def _launch(self, order: AttemptOrder) -> None:
        try:
            weights = self._weights(order)
        except WeightsUnavailableError as exc:
            # Checked at submit; gone since (a file deleted, a job's outputs removed).
            log.warning("job %s cannot start: %s", order.job_id, exc)
            with self.sessions.begin() as session:
                attempt = session.scalar(
                    select(JobAttempt).where(
                        JobAttempt.job_id == order.job_id, JobAttempt.number == order.attempt
                    )
                )
                report_status(session, attempt, JobStatus.FAILED.value, f"model.weights: {exc}")
            return
        order = replace(order, weights=weights)
        key = (order.job_id, order.attempt)
        self._launched_at[key] = time.monotonic()
        try:
            actor = ray_actor.launch(order)
        except Exception as exc:
            log.exception("could not launch job %s", order.job_id)
            with self.sessions.begin() as session:
                settle_lost_attempt(
                    session,
                    order.job_id,
                    order.attempt,
                    max_attempts=self.settings.max_attempts,
                    reason=f"Ray refused it: {type(exc).__name__}: {exc}",
                )
            return
        if order.gpus > 0:
            self._placements.launched(key, actor)
        log.info("job %s attempt %s launched", order.job_id, order.attempt)

    def _weights(self, order: AttemptOrder) -> str | None:
        """The path of the starting weights the job's spec names, if any."""
        reference = order.spec.get("model", {}).get("weights")
        if reference is None:
            return None
        with self._reads() as session:
            return str(weights_path(session, reference, order.artifact_root))

    def _explain_waits(
        self,
        free: dict[str, float],
        held: defaultdict[int, float],
        training_dense: dict[str, int],
        capacity: Capacity | None,
        cards: GpuCards,
    ) -> None:
        """Say why the head of the queue waits. Read as plain rows (no specs), and
        written only where a reason changed, so an unchanged queue costs one read."""
        quota = self.settings.owner_gpu_quota
        with self._reads() as session:
            head = session.execute(_QUEUE_HEAD).all()
        changed = []
        for job in head:
            over_quota = (
                quota is not None and job.gpus > 0 and held[job.owner_id] + job.gpus > quota
            )
            producer = training_dense.get(job.dense_identity or "")
            reason = _wait_reason(job, free, cards, capacity, over_quota, quota) or (
                f"waiting for job {producer}'s dense training, which it shares"
                if producer is not None
                else None
            )
            if reason is not None and job.queue_reason != reason:
                changed.append({"job": job.id, "reason": reason})
        if changed:
            with self.sessions.begin() as session:
                session.connection().execute(_SET_QUEUE_REASON, changed)
                announce(session, [JOBS, *(job_key(change["job"]) for change in changed)])


# One column per Candidate field, named after it and in its order (a
# Candidate is built from a row by position): a field without a column of that
# name fails here, at import, instead of keeping a default nobody set.
_CANDIDATE_COLUMNS = tuple(
    getattr(Job, {"job_id": "id"}.get(f.name, f.name)).label(f.name) for f in fields(Candidate)
)


def _fitting_window(queued: ColumnElement[bool], *order: Any, limit: int) -> Select:
    """The first ``limit`` jobs that are ``queued``, in ``order``, those of them
    within the free :cpus and :gpus (bound per tick)."""
    window = select(*_CANDIDATE_COLUMNS).where(queued).order_by(*order).limit(limit).subquery()
    return select(window).where(
        window.c.cpus <= bindparam("cpus"), window.c.gpus <= bindparam("gpus")
    )


# The running attempts, in launch order (for the card model: an attempt whose
# cards are not known yet is placed by Ray's rule, in the order Ray saw them).
_RUNNING = (
    select(
        Job.id,
        Job.attempt,
        Job.status,
        Job.gpus,
        Job.owner_id,
        Job.priority,
        Job.created_at,
        JobAttempt.started_at,
    )
    .outerjoin(JobAttempt, and_(JobAttempt.job_id == Job.id, JobAttempt.number == Job.attempt))
    .where(Job.status.in_([JobStatus.RUNNING.value, JobStatus.CANCELLING.value]))
    .order_by(JobAttempt.id, Job.id)
)
_QUEUED = JobStatus.QUEUED.value
# One statement, one round trip; UNION drops the jobs that are in both windows.
# The oldest jobs are asked for by a range on status that holds only "queued",
# ordered by status first: with status = 'queued', PostgreSQL drops the constant
# status from the ORDER BY and may walk ix_jobs_created_id from the oldest job of
# all, finished ones included (57 ms at 100,000 finished jobs); the range keeps
# it in the ORDER BY, which ix_jobs_status_created_id serves (0.5 ms).
_CANDIDATES = union(
    _fitting_window(Job.status == _QUEUED, *QUEUE_ORDER, limit=CANDIDATES),
    _fitting_window(
        and_(Job.status >= _QUEUED, Job.status <= _QUEUED),
        Job.status,
        Job.created_at,
        Job.id,
        limit=CANDIDATES // 10,
    ),
)
_QUEUE_HEAD = (
    select(
        Job.id,
        Job.owner_id,
        Job.cpus,
        Job.gpus,
        Job.memory_gb,
        Job.dense_identity,
        Job.queue_reason,
    )
    .where(Job.status == JobStatus.QUEUED.value)
    .order_by(*QUEUE_ORDER)
    .limit(QUEUE_HEAD)
)
# Still queued: a job claimed since the read keeps the claim's state.
_JOBS = cast(Table, Job.__table__)  # a mapped class's table is a Table
_SET_QUEUE_REASON = (
    update(_JOBS)
    .where(_JOBS.c.id == bindparam("job"), _JOBS.c.status == JobStatus.QUEUED.value)
    .values(queue_reason=bindparam("reason"))
)


def _next_launch(
    order: Order,
    cards: GpuCards,
    may_start: Callable[[Candidate], bool],
    gpus_fit: Callable[[Candidate], bool],
) -> Candidate | None:
    """The next job to launch, taken out of ``order``; None when no more can.

    Until cards are held, the order's first job that may start is looked at:
    it goes if its GPUs fit; if not, it waits this tick and the cards it would
    get soonest are held for it (``GpuCards.reserve``; none for a job no node
    could hold). Once held, the next job that fits goes only if Ray would
    place it on no held card: smaller jobs still pack the other cards, but no
    longer fill the ones the waiting job needs. Either order does this: in
    fifo the oldest job that waits for GPUs gets the cards, as first come,
    first served means."""
    while cards.reservation is None:
        top = order.first(may_start)
        if top is None or gpus_fit(top):
            return None if top is None else order.take(top)
        order.take(top)  # it waits; nothing later in the tick frees GPUs
        cards.reserve(top.job_id, top.gpus)
    return order.next(lambda c: may_start(c) and gpus_fit(c) and cards.allows(c.gpus))


def _wait_reason(
    job: Any,
    free: dict[str, float],
    cards: GpuCards,
    capacity: Capacity | None,
    over_quota: bool,
    quota: float | None,
) -> str | None:
    """Why a queued job (a row of _QUEUE_HEAD) cannot start now; None if it could."""
    unfit = capacity and shortfalls(capacity, cpus=job.cpus, gpus=job.gpus, memory_gb=job.memory_gb)
    if unfit:  # first: no wait ends this one, and a requeued job learns it too
        return unfit_reason(unfit)
    if job.queue_reason and job.queue_reason.startswith("attempt "):
        return None  # keep saying why it came back, until it runs again
    if over_quota:
        return f"the owner's GPU quota ({quota:g}) is in use"
    if job.gpus > free["GPU"]:
        return f"waiting for {job.gpus:g} GPU (free: {max(free['GPU'], 0):g})"
    if not cards.fits(job.gpus):
        return _cards_wait_reason(job.gpus, cards)
    if job.cpus > free["CPU"]:
        return f"waiting for {job.cpus:g} CPU (free: {max(free['CPU'], 0):g})"
    held = cards.reservation
    if held is not None and held.job_id != job.id and not cards.allows(job.gpus):
        return (
            f"the GPU card Ray would give it is held for job {held.job_id}, "
            f"which waits for {held.gpus:g} GPU"
        )
    return None


def _cards_wait_reason(gpus: float, cards: GpuCards) -> str:
    """Why ``gpus``, within what is free in sum, still waits: no card (or no node's
    cards) can hold it as Ray places GPUs."""
    whole, count = demand_shape(gpus)
    free = cards.describe_free()
    if whole:
        where = "" if count == 1 else " on one node"
        return f"waiting for {count} whole GPU{'s' if count > 1 else ''}{where} (free: {free})"
    if count:
        return f"waiting for {gpus:g} GPU on one card (free: {free})"
    return f"cannot run: Ray gives more than one GPU only as whole cards (asks {gpus:g})"
