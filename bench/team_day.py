"""A team's day on declared GPUs: this dispatcher against first come, first served and Ray alone.

Run as::

    python bench/team_day.py [--minutes 3] [--seed 1] [--gpus 4] [--quota 2]
        [--aging-seconds 30] [--drain-seconds 90] [--preempt-after 10]
        [--modes ranked,preempt,fifo,ray] [--png docs/team_day.png] [--json results.json]

Four users submit jobs over ``--minutes`` (bench/team_day_jobs.py): alice
(priority 0) and dave (batch work, priority -1) at random times, bob (urgent,
priority 2) a few, and carol a burst early in the day that alone would fill the
cluster. Each job asks for 0.25, 0.5 or 1 GPU and lasts 12, 25 or 50 seconds
(standing in for jobs of hours); arrivals, sizes and durations are drawn from
``--seed``, the same for every mode. Each mode gets its own local Ray head
(workers/ray_cluster.py: free ports, its own processes, stopped at the end,
also on errors) declaring ``--gpus`` GPUs, which this machine need not have.
The modes, one after another in the same run:

1. ``ranked``: the service as deployed, SQLite behind it: the API under
   uvicorn and a Dispatcher thread in this process, users submitting with
   their tokens over HTTP; the dispatcher ranks (priority plus aging,
   fair share by GPU-seconds, ``SILO_OWNER_GPU_QUOTA=--quota``);
2. ``preempt``: ranked, with ``SILO_PREEMPTION=fair-share`` and
   ``SILO_PREEMPTION_MIN_RUNTIME_SECONDS=--preempt-after``: the dispatcher may
   kill a job that has run that long so that a waiting job of an owner
   holding fewer GPUs can start; the killed job goes back to the queue and
   its next attempt resumes from its last checkpoint. Only this mode passes
   the two settings (a server without them runs the other modes);
3. ``fifo``: the same as ranked with ``SILO_DISPATCH_ORDER=fifo``: oldest
   first among the jobs that fit what is free; the quota still applies;
4. ``ray``: no service: each job goes straight to Ray as an actor asking for
   its resources when it arrives, and Ray starts the pending actors as
   resources free (no priority, no fair share, no quota, no preemption).

The jobs are stand-ins (bench/team_day_jobs.py): an actor that holds its
resources for the job's duration, then reports success to the API as a
worker does; it checkpoints every 5 s of work, so that an attempt killed by
preemption loses at most that, and the next attempt holds its resources for
the work left only. The point is the scheduling; a real engine job costs
seconds of start-up and CPU that two cores shared by a dozen jobs would turn
into noise. Everything else is real: submission, validation, the queue, the
dispatcher's ticks, claims, preemption's kills, Ray's placement of
fractional GPUs. Each job is recorded as its runs (attempts), each from its
actor's start to its end on the actor's own clock (its process running; its
work done, or its last heartbeat before it was killed), so Ray's actor
start-up counts as waiting in every mode, and so does the time a preempted
job spends back in the queue.

A mode ends when every job has finished, or ``--drain-seconds`` after the
last arrival (a job still waiting then counts as waiting until that moment).
The measures are defined in bench/team_day_metrics.py: utilisation while
work waits, received against max-min fair share per user and Jain's index,
the same against fair share by strict priority (the service's policy:
priority first, fair share within a priority), quota violations, waits per
priority class (submit to first start; the waits again after preemptions
apart), preemptions and the GPU-seconds they lost (held beyond the work
checkpointed). The aging bound is
``(highest priority - lowest + 1) * --aging-seconds + the longest job``: by
then a job of the lowest class outranks any job that arrives, and one job
length is the longest a GPU stays held. Dispatch rate: jobs launched per
second spent inside the dispatcher's ticks (the service's modes), with the
ticks' p50 and p95 (bench/dispatch_tick.py measures the 10,000-queued case).

The PNG shows each user's GPUs held over time, one panel per mode, a job
held only inside its runs; preemptions are marked.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC
from pathlib import Path
from typing import Any

import httpx
import ray
import uvicorn
import yaml
from serve import free_port
from sqlalchemy import select
from sqlalchemy.orm import sessionmaker
from team_day_jobs import USERS, StandInJob, Work, read_times, workload
from team_day_metrics import JobRecord
from team_day_report import ModeResult, aging_bound, console, job_record, show, summary

from server.app import create_app
from server.auth.tokens import create_user_token
from server.db.migrate import upgrade
from server.db.models import Job, JobAttempt
from server.db.session import make_engine, make_session_factory
from server.dispatch import Dispatcher, TickReport
from server.serving import uvicorn_config
from server.settings import Settings
from silo_contract.order import AttemptOrder
from workers import ray_actor
from workers.ray_cluster import NAMESPACE, connect, start_local_head, stop_local_head

BENCH = Path(__file__).resolve().parent
PRESET = yaml.safe_load((BENCH.parent / "silo_core" / "presets" / "digits-silo.yaml").read_text())
CPUS = 0.1  # per job: CPUs never decide, GPUs do
HEAD_CPUS = 8  # declared; room for every job that the GPUs let run at once
MODES = ("ranked", "preempt", "fifo", "ray")
PREEMPTION_SETTINGS = ("preemption", "preemption_min_runtime_seconds")  # the preempt mode's


# --- Ray and the service --------------------------------------------------------------


@contextmanager
def ray_head(state: Path, gpus: int) -> Iterator[None]:
    """A local head declaring ``gpus`` GPUs, joined; stopped at the end, also on errors.
    Its workers import the stand-in job from bench/ (PYTHONPATH, head only)."""
    path = os.pathsep.join([str(BENCH), *filter(None, [os.environ.get("PYTHONPATH")])])
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = path
    try:
        address = start_local_head(state, num_cpus=HEAD_CPUS, num_gpus=gpus)
    finally:
        if saved is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = saved
    try:
        connect(address, state)
        yield
    finally:
        ray.shutdown()
        stop_local_head(state)


@contextmanager
def api_server(settings: Settings) -> Iterator[str]:
    """The API under uvicorn in a thread, as tests/servers.py runs it; its base URL."""
    port = free_port()
    config = uvicorn_config(
        create_app(settings),
        settings,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise SystemExit("the API server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


class TimedDispatcher(Dispatcher):
    """The dispatcher, its ticks timed (the whole tick: reconcile, rank, claim, launch)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.ticks: list[float] = []
        self.launches = 0

    def tick(self) -> TickReport:
        begin = time.perf_counter()
        report = super().tick()
        self.ticks.append(time.perf_counter() - begin)
        self.launches += len(report.launched)
        return report


def stand_in_launcher(folder: Path, work: dict[int, Work]) -> Callable[[AttemptOrder], object]:
    """``ray_actor.launch`` for the stand-ins: the same detached, named actor with the
    job's resources, running the stand-in instead of the engine. The job is found
    by its spec's seed (the workload's key)."""

    def launch(order: AttemptOrder) -> object:
        job = work[order.spec["seed"]]
        actor = StandInJob.options(
            name=ray_actor.actor_name(order.job_id, order.attempt),
            namespace=NAMESPACE,
            lifetime="detached",
            num_cpus=order.cpus,
            num_gpus=order.gpus,
        ).remote(str(folder), job.key, order.attempt)
        report = {
            "api_url": order.api_url,
            "job_id": order.job_id,
            "attempt": order.attempt,
            "token": order.token,
        }
        actor.run.remote(job.seconds, report)
        return actor

    return launch


# --- one mode -------------------------------------------------------------------------


def submit_on_time(
    work: list[Work], submit: Callable[[Work], None]
) -> tuple[float, dict[int, float]]:
    """Submit each job at its arrival; the run's origin and each job's submit time."""
    origin = time.time()
    submitted = {}
    for job in work:
        time.sleep(max(0.0, origin + job.arrival - time.time()))
        submitted[job.key] = time.time() - origin
        submit(job)
    return origin, submitted


def wait_finished(folder: Path, work: list[Work], origin: float, drain: float) -> float:
    """Until every job has ended, or ``drain`` seconds after the last arrival; the
    moment it stopped, from the origin."""
    deadline = origin + max(job.arrival for job in work) + drain
    while time.time() < deadline:
        times = [read_times(folder, job.key) for job in work]
        if all(t is not None and t.done for t in times):
            break
        time.sleep(0.5)
    return time.time() - origin


def records(
    folder: Path, work: list[Work], origin: float, submitted: dict[int, float], until: float
) -> list[JobRecord]:
    return [
        job_record(job, read_times(folder, job.key), origin, submitted[job.key], until)
        for job in work
    ]


def service_mode(mode: str, work: list[Work], args: argparse.Namespace, folder: Path) -> ModeResult:
    """``ranked``, ``fifo``, or ``preempt`` (ranked, with fair-share preemption)."""
    began = time.monotonic()
    url = f"sqlite:///{folder / 'silo.db'}"
    upgrade(url)
    engine = make_engine(url)
    sessions = make_session_factory(engine)
    with sessions.begin() as session:
        tokens = {user.name: create_user_token(session, user.name) for user in USERS}
    extra: dict[str, Any] = {}
    if mode == "preempt":  # only here: ranked and fifo run on a server without these
        extra = {
            "preemption": "fair-share",
            "preemption_min_runtime_seconds": args.preempt_after,
        }
    settings = Settings(
        database_url=url,
        data_dir=folder / "data",
        owner_gpu_quota=args.quota,
        priority_aging_seconds=args.aging_seconds,
        dispatch_order="fifo" if mode == "fifo" else "ranked",
        **extra,
    )
    times = folder / "times"
    times.mkdir()
    by_key = {job.key: job for job in work}
    original_launch = ray_actor.launch
    with api_server(settings) as base, ray_head(folder / "ray", args.gpus):
        clients = {
            name: httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"})
            for name, token in tokens.items()
        }

        def submit(job: Work) -> None:
            body = {
                "spec": {**PRESET, "seed": job.key, "device": "cpu"},
                "name": f"{job.user}-{job.key}",
                "priority": job.priority,
                "resources": {"cpus": CPUS, "gpus": job.gpus},
            }
            clients[job.user].post("/v1/jobs", json=body, timeout=30).raise_for_status()

        ray_actor.launch = stand_in_launcher(times, by_key)  # type: ignore[assignment]
        dispatcher = TimedDispatcher(settings, sessions, base)
        stop = threading.Event()
        thread = threading.Thread(target=dispatcher.run, args=(stop,), daemon=True)
        thread.start()
        try:
            origin, submitted = submit_on_time(work, submit)
            until = wait_finished(times, work, origin, args.drain_seconds)
        finally:
            stop.set()
            thread.join(timeout=30)
            ray_actor.launch = original_launch
            for client in clients.values():
                client.close()
    startup = startup_lags(sessions, times)
    engine.dispose()
    return ModeResult(
        mode,
        records(times, work, origin, submitted, until),
        until,
        time.monotonic() - began,
        dispatcher.ticks,
        dispatcher.launches,
        startup,
    )


def startup_lags(sessions: sessionmaker, times: Path) -> list[float]:
    """Per started attempt, from the dispatcher's launch to its actor running (seconds)."""
    with sessions() as session:
        rows = session.execute(
            select(Job.spec, JobAttempt.number, JobAttempt.started_at).join(
                JobAttempt, JobAttempt.job_id == Job.id
            )
        ).all()
    lags = []
    for spec, number, launched in rows:
        job = read_times(times, spec["seed"])
        runs = [run for run in job.runs if run.attempt == number] if job is not None else []
        if runs and launched is not None:
            launched_at = launched.replace(tzinfo=launched.tzinfo or UTC).timestamp()
            lags.append(runs[0].start - launched_at)
    return lags


def ray_mode(work: list[Work], args: argparse.Namespace, folder: Path) -> ModeResult:
    began = time.monotonic()
    times = folder / "times"
    times.mkdir()
    actors = []  # held: an actor whose last handle goes is killed

    def submit(job: Work) -> None:
        actor = StandInJob.options(num_cpus=CPUS, num_gpus=job.gpus).remote(str(times), job.key)
        actor.run.remote(job.seconds)
        actors.append(actor)

    with ray_head(folder / "ray", args.gpus):
        origin, submitted = submit_on_time(work, submit)
        until = wait_finished(times, work, origin, args.drain_seconds)
    return ModeResult(
        "ray", records(times, work, origin, submitted, until), until, time.monotonic() - began
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=3.0, help="arrivals span this long")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--gpus", type=int, default=4, help="GPUs the Ray head declares")
    parser.add_argument("--quota", type=float, default=2.0, help="SILO_OWNER_GPU_QUOTA")
    parser.add_argument("--aging-seconds", type=float, default=30.0)
    parser.add_argument("--drain-seconds", type=float, default=90.0)
    parser.add_argument(
        "--preempt-after",
        type=float,
        default=10.0,
        help="SILO_PREEMPTION_MIN_RUNTIME_SECONDS in the preempt mode",
    )
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--png", type=Path, default=BENCH.parent / "docs" / "team_day.png")
    parser.add_argument("--json", type=Path, help="write the figures and each job's times here")
    args = parser.parse_args()
    modes = args.modes.split(",")
    # Settings ignores names it does not know: without these the mode would quietly be ranked.
    missing = [name for name in PREEMPTION_SETTINGS if name not in Settings.model_fields]
    if "preempt" in modes and missing:
        parser.error(f"the preempt mode needs settings this server lacks: {', '.join(missing)}")
    work = workload(args.seed, args.minutes)
    bound = aging_bound(work, args.aging_seconds)
    gpu_seconds = sum(job.gpus * job.seconds for job in work)
    console.print(
        f"{len(work)} jobs, {gpu_seconds:.0f} GPU-seconds of work over {args.minutes:g} min "
        f"({gpu_seconds / (args.gpus * args.minutes * 60):.2f}x the capacity of the arrivals)"
    )
    results = []
    root = Path(tempfile.mkdtemp(prefix="team-day-"))
    began = time.monotonic()
    try:
        for mode in modes:
            folder = root / mode
            folder.mkdir()
            console.print(f"[bold]{mode}[/bold] ...")
            if mode == "ray":
                result = ray_mode(work, args, folder)
            else:
                result = service_mode(mode, work, args, folder)
            results.append(result)
            console.print(f"  done in {result.wall:.0f} s")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    figures = [summary(result, args, bound) for result in results]
    show(figures, args)
    console.print(f"wall time, all modes: {time.monotonic() - began:.0f} s")
    from team_day_plot import plot  # matplotlib only once there is something to draw

    plot(results, args.gpus, args.quota, args.png)
    console.print(f"occupancy plot: {args.png}")
    if args.json:  # the figures, and each job's times for a closer look
        for f, result in zip(figures, results, strict=True):
            f["records"] = [dataclasses.asdict(job) for job in result.jobs]  # runs: [start, end]
        args.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
