"""Jobs and a recorded capacity written straight to the live server's database, for
the cluster view's tests (API, CLI, dashboard): running jobs with or without an
ETA, queued jobs with reasons, GPU attempts for fair share.

Importable as ``cluster_jobs`` from any test (tests/ is on sys.path).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from servers import LiveServer, database_session
from sqlalchemy import select

from server.db.models import Job, JobAttempt, User, utcnow
from server.jobs import cluster
from server.jobs.cluster import Capacity

NODE = {"CPU": 4.0, "GPU": 2.0, "memory_gb": 16.0}
TWO_NODES = Capacity.of([NODE, {**NODE, "GPU": 0.0}])  # 8 CPUs, 2 GPUs, 32 GB
WAITING_GPU = "waiting for 1 GPU (free: 0)"


def user_ids(session) -> dict[str, int]:
    return dict(session.execute(select(User.name, User.id)).all())


def add_job(session, owner: int, status: str = "queued", **values) -> int:
    job = Job(owner_id=owner, spec={}, spec_hash="h", status=status, **values)
    session.add(job)
    session.flush()
    return job.id


def add_running(session, owner: int, *, eta_s: float | None = None, **values) -> int:
    """A running job; with ``eta_s``, half done after running that long, so its ETA
    is ``eta_s``; without, started a minute ago with no progress (no ETA)."""
    progress = {}
    if eta_s is not None:  # 4 epochs planned (2 dense, 1 cycle of 2), 2 done
        progress = {
            "planned_cycles": 1,
            "dense_epochs": 2,
            "epochs_per_cycle": 2,
            "progress_cycle": 1,
            "progress_epoch": 0,
        }
    started = utcnow() - timedelta(seconds=eta_s or 60)
    return add_job(session, owner, "running", started_at=started, **progress, **values)


def add_attempt(session, job_id: int, started: datetime, ended: datetime | None) -> None:
    """The job's first attempt, from ``started`` to ``ended`` (None: still running)."""
    attempt = JobAttempt(
        job_id=job_id, number=1, token_hash=f"attempt-{job_id}", started_at=started, ended_at=ended
    )
    session.add(attempt)


def record(live_server: LiveServer, capacity: Capacity = TWO_NODES, age_s: float = 0.0) -> None:
    """The dispatcher's capacity record, measured ``age_s`` seconds ago."""
    with database_session(live_server) as session:
        cluster.record(session, capacity, now=utcnow() - timedelta(seconds=age_s))


def busy_cluster(live_server: LiveServer) -> dict[str, int]:
    """Two nodes. Alice runs a GPU job, 15.5 minutes in and as long to go; bob runs
    one a minute in with no ETA, and used a GPU for an hour before. Three jobs
    queue (bob's, then two of alice's), the first two waiting for a GPU: the
    first can start when alice's job ends, the others cannot be estimated."""
    record(live_server)
    now = utcnow()
    with database_session(live_server) as session:
        ids = user_ids(session)
        alice = add_running(session, ids["alice"], eta_s=930, cpus=2, gpus=1, name="alice-run")
        add_attempt(session, alice, now - timedelta(seconds=930), None)
        bob = add_running(session, ids["bob"], cpus=1, gpus=1, name="bob-run")
        add_attempt(session, bob, now - timedelta(seconds=60), None)
        done = add_job(session, ids["bob"], "succeeded", gpus=1)
        add_attempt(session, done, now - timedelta(hours=2), now - timedelta(hours=1))
        jobs = {
            "first": add_job(session, ids["bob"], name="first", gpus=1, queue_reason=WAITING_GPU),
            "second": add_job(
                session, ids["alice"], name="second", gpus=1, queue_reason=WAITING_GPU
            ),
            "third": add_job(session, ids["alice"], name="third", cpus=2),
        }
    return jobs
