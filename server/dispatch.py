"""The dispatcher: queued jobs to Ray, and what happens when workers go away.

Every tick it

1. reconciles the running jobs with Ray: an attempt whose actor is gone
   without finishing was lost (worker killed, node down) and is settled
   (queued again to resume from its checkpoint, or failed after
   ``max_attempts``); a cancelling job still running after the grace period
   has its actor killed and ends cancelled;
2. claims queued jobs that fit the cluster's free CPUs and GPUs (and their
   owner's GPU quota) with ``claim_next``, which is safe with several
   dispatchers, and launches each in its own detached actor;
3. writes down why the jobs at the head of the queue still wait.

The dispatcher keeps nothing that matters in memory: the database and Ray's
named actors are the state, so a restarted dispatcher (or API server) adopts
the running jobs as they are.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from server.db.models import Job
from server.jobs.attempts import finish_cancel, settle_lost_attempt
from server.jobs.claims import Claim, claim_next
from server.jobs.states import JobStatus
from server.jobs.views import QUEUE_ORDER
from server.settings import Settings
from workers import ray_actor
from workers.attempt import AttemptOrder

log = logging.getLogger("silo.dispatcher")

# A just-launched actor may not be visible by name for a moment.
LAUNCH_GRACE_SECONDS = 10.0
QUEUE_HEAD = 100  # queued jobs whose waiting reason is kept up to date


@dataclass
class TickReport:
    launched: list[int] = field(default_factory=list)
    lost: list[int] = field(default_factory=list)
    killed: list[int] = field(default_factory=list)


class Dispatcher:
    def __init__(self, settings: Settings, sessions: sessionmaker, api_url: str) -> None:
        self.settings, self.sessions, self.api_url = settings, sessions, api_url
        self._launched_at: dict[tuple[int, int], float] = {}
        self._cancelling_since: dict[tuple[int, int], float] = {}

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
        self._reconcile(report)
        self._dispatch(report)
        return report

    # --- 1. running jobs ----------------------------------------------------------

    def _reconcile(self, report: TickReport) -> None:
        with self.sessions() as session:
            running = session.execute(
                select(Job.id, Job.attempt, Job.status).where(
                    Job.status.in_([JobStatus.RUNNING.value, JobStatus.CANCELLING.value])
                )
            ).all()
        now = time.monotonic()
        live = {(job_id, attempt) for job_id, attempt, _ in running}
        for key in set(self._cancelling_since) - live:
            del self._cancelling_since[key]
        for job_id, attempt, status in running:
            key = (job_id, attempt)
            if ray_actor.find(job_id, attempt) is None:
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
            elif status == JobStatus.CANCELLING.value:
                since = self._cancelling_since.setdefault(key, now)
                if now - since >= self.settings.cancel_grace_seconds:
                    ray_actor.kill(job_id, attempt)
                    with self.sessions.begin() as session:
                        if finish_cancel(session, job_id, attempt):
                            report.killed.append(job_id)
                    log.warning("job %s did not stop within the grace period; killed", job_id)

    # --- 2. queued jobs -----------------------------------------------------------

    def _dispatch(self, report: TickReport) -> None:
        free = ray_actor.free_resources()
        while True:
            with self.sessions.begin() as session:
                conditions = [Job.cpus <= free["CPU"], Job.gpus <= free["GPU"]]
                quota_full = self._owners_at_quota(session)
                if quota_full:
                    conditions.append(Job.owner_id.not_in(quota_full))
                claim = claim_next(session, *conditions)
            if claim is None:
                break
            self._launch(claim)
            report.launched.append(claim.job_id)
            with self.sessions() as session:
                job = session.get_one(Job, claim.job_id)
                free["CPU"] -= job.cpus
                free["GPU"] -= job.gpus
        self._explain_waits(free)

    def _owners_at_quota(self, session: Session) -> list[int]:
        quota = self.settings.owner_gpu_quota
        if quota is None:
            return []
        held = session.execute(
            select(Job.owner_id, func.sum(Job.gpus))
            .where(Job.status.in_([JobStatus.RUNNING.value, JobStatus.CANCELLING.value]))
            .group_by(Job.owner_id)
        ).all()
        return [owner for owner, gpus in held if gpus is not None and gpus >= quota]

    def _launch(self, claim: Claim) -> None:
        with self.sessions() as session:
            job = session.get_one(Job, claim.job_id)
            cpus, gpus, memory_gb = job.cpus, job.gpus, job.memory_gb
        order = AttemptOrder(
            job_id=claim.job_id,
            attempt=claim.attempt,
            token=claim.token,
            spec=claim.spec,
            api_url=self.api_url,
            artifact_root=self.settings.resolved_artifact_root(),
        )
        self._launched_at[(claim.job_id, claim.attempt)] = time.monotonic()
        try:
            ray_actor.launch(order, cpus=cpus, gpus=gpus, memory_gb=memory_gb)
        except Exception as exc:
            log.exception("could not launch job %s", claim.job_id)
            with self.sessions.begin() as session:
                settle_lost_attempt(
                    session,
                    claim.job_id,
                    claim.attempt,
                    max_attempts=self.settings.max_attempts,
                    reason=f"Ray refused it: {type(exc).__name__}: {exc}",
                )
            return
        log.info("job %s attempt %s launched", claim.job_id, claim.attempt)

    def _explain_waits(self, free: dict[str, float]) -> None:
        with self.sessions.begin() as session:
            head = session.scalars(
                select(Job)
                .where(Job.status == JobStatus.QUEUED.value)
                .order_by(*QUEUE_ORDER)
                .limit(QUEUE_HEAD)
            ).all()
            quota_full = set(self._owners_at_quota(session))
            for job in head:
                reason = _wait_reason(job, free, quota_full, self.settings.owner_gpu_quota)
                if reason is not None and job.queue_reason != reason:
                    job.queue_reason = reason


def _wait_reason(
    job: Job, free: dict[str, float], quota_full: set[int], quota: float | None
) -> str | None:
    if job.queue_reason and job.queue_reason.startswith("attempt "):
        return None  # keep saying why it came back, until it runs again
    if job.owner_id in quota_full:
        return f"the owner's GPU quota ({quota:g}) is in use"
    if job.gpus > free["GPU"]:
        return f"waiting for {job.gpus:g} GPU (free: {max(free['GPU'], 0):g})"
    if job.cpus > free["CPU"]:
        return f"waiting for {job.cpus:g} CPU (free: {max(free['CPU'], 0):g})"
    return None
