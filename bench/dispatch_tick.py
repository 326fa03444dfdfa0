"""The dispatcher's tick with a long queue: 10,000 queued jobs, 100 running, on PostgreSQL.

Run as::

    python bench/dispatch_tick.py [--queued 10000] [--running 100] [--ticks 40]
        [--launch-ticks 10] [--baseline REV] [--actors-from helper|here] [--preemption]

It makes a fresh PostgreSQL database as bench/api_load.py does (dropped at
the end), migrated to head, with ``--history`` finished jobs from 20 owners
over 90 days (bench/api_load.py's fill), two in five on GPUs, each with its
attempt, then adds:

* ``--queued`` queued jobs: owners skewed (a few owners hold most of the
  queue), priorities mostly 0 with some from -5 to 10, ages up to two days
  (so aging lifts the oldest), 1 to 8 CPUs, GPUs from none to 2 with
  fractional ones, a few asking more memory than the node has, and a third
  sharing a dense identity with other jobs (a study's members);
* ``--running`` running jobs with live attempts (1 to 4 CPUs, 40% with 0.25
  to 2 GPUs, some still in their dense training), a quarter on their second
  attempt after a lost first one, and ``--recent`` finished GPU jobs whose
  attempts ended inside the fair-share window, so that GPU-seconds differ
  between owners.

Ray is a real local head (workers/ray_cluster.py, its own state folder and
free ports) declared with as many CPUs and GPUs as the running jobs hold
plus a slack of ``--slack-cpus``/``--slack-gpus`` (GPUs are a logical
resource: a machine without one can declare them). Each running job has a
real, idle, detached actor under ray_actor's name in its namespace, holding
the job's CPUs and GPUs (about 30 MB and one process each). By default a
helper process creates them and exits, as after a dispatcher restart (the
dispatcher adopts the jobs); ``--actors-from here`` creates them in this
process, as a dispatcher that launched them itself, which Ray then answers
from a local cache.

Two phases, each dispatcher's ticks taking turns so that the machine's noise
falls on both:

a. **steady**: a filler actor holds the slack, so the cluster is full and no
   queued job fits: the common case with a long queue. Every tick must
   launch nothing and lose nothing.
b. **launch**: the filler is killed, so the slack is free and each tick
   launches a few jobs. ``ray_actor.launch`` is replaced by a recorder in
   this benchmark only: it times the dispatcher's own work (ranking,
   claiming, resolving weights), not Ray starting actors. After each tick the
   claimed jobs are put back in the queue (outside the timing), so every
   tick starts from the same state.

``--baseline REV`` also loads server/dispatch.py as it was at git revision
REV and runs its ticks alternately with the current code's on the same
database and Ray: a side-by-side before/after.

The breakdown wraps the dispatcher's parts in timers (exclusive times: a
part's time excludes the parts it calls) and puts every SQL statement,
COMMIT and ROLLBACK under the part that issued it: ``SQL`` is the driver and
database time inside a part, ``round trips`` how many it sent (a ROLLBACK of
a connection outside any transaction sends nothing and is not counted). What
no part covers (sessions opening and closing, the tick's own code) is
``other``.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import math
import os
import random
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import types
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import ray
from api_load import DIGITS_SPEC, database, fill, percentile_ms
from rich.console import Console
from rich.table import Table
from sqlalchemy import bindparam, delete, event, insert, select, text, update
from sqlalchemy.engine import Engine

from server.db.models import Job, JobAttempt, User, utcnow
from server.db.session import make_engine, make_session_factory
from server.settings import Settings
from workers import ray_actor
from workers.ray_cluster import NAMESPACE, connect, stop_local_head

ROOT = Path(__file__).parents[1]
console = Console(width=160)
OTHER = "other: sessions, the tick's own code"
FILLER_NAMESPACE = "silo-bench"  # not the service's: the reconcile must skip it
WARMUP_TICKS = 3
HELPER = "--create-actors"  # the helper process's first argument
ORIGIN = {"helper": "adopted from another process", "here": "created by this process"}


# --- timing ------------------------------------------------------------------------


# With preemption on, a full cluster's tick reads and ranks the candidates up
# to the largest node's GPUs, holds cards for the first that waits and weighs
# the running jobs as victims; a minimum run time no job reaches keeps every
# tick from stopping any, so the ticks stay comparable (and the steady phase's
# cluster full).
PREEMPTION_WEIGHED = {"preemption": "fair-share", "preemption_min_runtime_seconds": 1e9}


@dataclass
class Parts:
    """One dispatcher's times in one phase, summed over its ticks."""

    ticks: list[float] = field(default_factory=list)
    python: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    sql: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    calls: Counter[str] = field(default_factory=Counter)
    statements: Counter[str] = field(default_factory=Counter)
    launched: list[int] = field(default_factory=list)


@dataclass
class Frame:
    label: str
    sql: bool
    started: float
    children: float = 0.0


class Timer:
    """Exclusive time per part, into ``sink`` while one is set (one thread ticks)."""

    def __init__(self) -> None:
        self.sink: Parts | None = None
        self.stack: list[Frame] = []

    def enter(self, label: str, *, sql: bool = False) -> None:
        if self.sink is not None:
            self.stack.append(Frame(label, sql, time.perf_counter()))

    def enter_sql(self) -> None:
        self.enter(self.stack[-1].label if self.stack else OTHER, sql=True)

    def leave(self) -> None:
        if self.sink is None or not self.stack:
            return
        frame = self.stack.pop()
        elapsed = time.perf_counter() - frame.started
        if frame.sql:
            self.sink.sql[frame.label] += elapsed - frame.children
            self.sink.statements[frame.label] += 1
        else:
            self.sink.python[frame.label] += elapsed - frame.children
            self.sink.calls[frame.label] += 1
        if self.stack:
            self.stack[-1].children += elapsed


TIMER = Timer()


def _timed(label: str, func: Callable[..., Any], *, sql: bool = False) -> Callable[..., Any]:
    @functools.wraps(func)
    def timed(*args: Any, **kwargs: Any) -> Any:
        TIMER.enter(label, sql=sql)
        try:
            return func(*args, **kwargs)
        finally:
            TIMER.leave()

    return timed


# (label, attribute of the dispatcher module): the parts timed. A missing
# attribute is skipped, so one list serves the old code and the new.
PARTS: tuple[tuple[str, str], ...] = (
    ("tick", "Dispatcher.tick"),
    ("reconcile: read the running jobs, decide", "Dispatcher._reconcile"),
    ("reconcile: settle a lost attempt", "settle_lost_attempt"),
    ("fit, rank, claim loop; its sessions' end", "Dispatcher._dispatch"),
    ("capacity record (Capacity.of, write)", "Dispatcher._measure_cluster"),
    ("candidates (the queue's window)", "Dispatcher._candidates"),
    ("fair-share GPU-seconds", "_usage"),
    ("fair-share GPU-seconds", "gpu_seconds"),
    ("fair-share GPU-seconds", "window_gpu_seconds"),
    ("running jobs and GPUs per owner", "_running_by_owner"),
    ("running jobs and GPUs per owner", "running_by_owner"),
    ("dense trainings in progress", "Dispatcher._dense_in_progress"),
    ("dense cache check (file stat)", "Dispatcher._dense_cached"),
    ("ranking: next_job", "next_job"),
    ("ranking: LaunchOrder", "LaunchOrder.__init__"),
    ("ranking: LaunchOrder", "LaunchOrder.next"),
    ("claim (claim_job)", "claim_job"),
    ("launch: weights, record (Ray not called)", "Dispatcher._launch"),
    ("explain waits (100 head rows)", "Dispatcher._explain_waits"),
)
# Ray's calls, in workers/ray_actor.py, which both dispatchers share.
RAY_PARTS: tuple[tuple[str, str], ...] = (
    ("Ray: find, one per running job", "find"),
    ("Ray: the named actors, one list", "live_actor_names"),
    ("Ray: free_resources", "free_resources"),
    ("Ray: node_sizes", "node_sizes"),
)


def instrument(module: types.ModuleType) -> None:
    """Wrap a dispatcher module's PARTS in timers."""
    for label, attribute in PARTS:
        owner: Any = module
        *path, name = attribute.split(".")
        for part in path:
            owner = getattr(owner, part, None)
        if owner is not None and hasattr(owner, name):
            setattr(owner, name, _timed(label, getattr(owner, name)))


def instrument_ray() -> None:
    for label, name in RAY_PARTS:
        if hasattr(ray_actor, name):
            setattr(ray_actor, name, _timed(label, getattr(ray_actor, name)))


def time_sql(engine: Engine) -> None:
    """Every statement, COMMIT and ROLLBACK, under the part that issued it."""
    event.listen(engine, "before_cursor_execute", lambda *_: TIMER.enter_sql())
    event.listen(engine, "after_cursor_execute", lambda *_: TIMER.leave())
    event.listen(engine, "handle_error", lambda *_: TIMER.leave())
    dialect = type(engine.dialect)
    for name in ("do_commit", "do_rollback"):
        original = getattr(dialect, name)

        def wrapped(self: Any, connection: Any, _original: Any = original) -> None:
            if _idle(connection):  # psycopg sends nothing: no round trip to count
                _original(self, connection)
                return
            TIMER.enter_sql()
            try:
                _original(self, connection)
            finally:
                TIMER.leave()

        setattr(dialect, name, wrapped)


def _idle(connection: Any) -> bool:
    """Whether a psycopg connection is outside a transaction (autocommit reads)."""
    driver = getattr(connection, "driver_connection", connection)  # the pool's proxy or not
    status = getattr(getattr(driver, "pgconn", None), "transaction_status", None)
    return status == 0  # psycopg.pq.TransactionStatus.IDLE


def baseline_module(revision: str) -> types.ModuleType:
    """server/dispatch.py as it was at ``revision``, loaded as its own module."""
    source = subprocess.run(
        ["git", "show", f"{revision}:server/dispatch.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    name = f"dispatch_at_{revision.replace('/', '_').replace('-', '_')}"
    module = types.ModuleType(name)
    module.__file__ = f"{revision}:server/dispatch.py"
    sys.modules[name] = module  # dataclasses look their module up while being built
    exec(compile(source, module.__file__, "exec"), module.__dict__)
    return module


# --- the database ------------------------------------------------------------------


def _spread(rng: random.Random, choices: tuple[tuple[Any, float], ...]) -> Any:
    values, weights = zip(*choices, strict=True)
    return rng.choices(values, weights)[0]


QUEUED_GPUS = ((0.0, 55), (0.25, 15), (0.5, 10), (1.0, 15), (2.0, 5))
QUEUED_CPUS = ((1.0, 40), (2.0, 30), (4.0, 20), (8.0, 10))
PRIORITIES = ((0, 80), (1, 4), (2, 3), (5, 3), (10, 5), (-5, 5))
MEMORY = ((None, 85), (4.0, 5), (8.0, 5), (64.0, 5))  # 64: more than the node has
RUNNING_GPUS = ((0.0, 60), (0.25, 10), (0.5, 10), (1.0, 15), (2.0, 5))


HISTORY_ATTEMPTS = """
UPDATE jobs SET gpus = (id % 5) * 0.5 WHERE id % 5 < 3;
INSERT INTO job_attempts (job_id, number, token_hash, status, started_at, ended_at)
SELECT id, 1, encode(sha256(id::text::bytea), 'hex'), status, created_at,
       created_at + interval '30 minutes'
FROM jobs;
"""


@dataclass
class Running:
    job_id: int
    attempt: int
    cpus: float
    gpus: float


def populate(url: str, args: argparse.Namespace) -> list[Running]:
    """The queue, the running jobs with their attempts, and recent GPU history."""
    rng = random.Random(args.seed)
    engine = make_engine(url)
    now = utcnow()
    with engine.begin() as connection:
        # fill()'s finished jobs: two in five on GPUs, each with its one attempt,
        # ended half an hour after it was submitted (the last day's fall inside
        # the fair-share window).
        connection.execute(text(HISTORY_ATTEMPTS))
        owners = list(connection.execute(select(User.id).order_by(User.id)).scalars())
        # A few owners hold most of the queue, as in a team where some run studies.
        weights = [1.0 / (n + 1) for n in range(len(owners))]
        identities = [f"{n:064x}" for n in range(args.queued // 50 + 1)]

        def job(status: str, created: datetime, **values: Any) -> dict[str, Any]:
            return {
                "owner_id": rng.choices(owners, weights)[0],
                "spec": DIGITS_SPEC,
                "spec_hash": secrets.token_hex(32),
                "status": status,
                "created_at": created,
                "priority": 0,
                "attempt": 0,
                **values,
            }

        queued = [
            job(
                "queued",
                now - timedelta(seconds=rng.uniform(0, 2 * 86_400)),
                priority=_spread(rng, PRIORITIES),
                cpus=_spread(rng, QUEUED_CPUS),
                gpus=_spread(rng, QUEUED_GPUS),
                memory_gb=_spread(rng, MEMORY),
                dense_identity=rng.choice(identities) if rng.random() < 0.3 else None,
            )
            for _ in range(args.queued)
        ]
        for first in range(0, len(queued), 5000):
            connection.execute(insert(Job), queued[first : first + 5000])

        def started(hours: float) -> datetime:
            return now - timedelta(hours=rng.uniform(0.1, hours))

        running: list[dict[str, Any]] = []
        for n in range(args.running):
            dense = n % 10 == 0  # still in its dense training (cycle 0): others wait
            running.append(
                job(
                    "running",
                    started(30),
                    attempt=2 if n % 4 == 0 else 1,
                    cpus=rng.choice((1.0, 2.0, 2.0, 4.0)),
                    gpus=_spread(rng, RUNNING_GPUS),
                    dense_identity=rng.choice(identities) if dense else None,
                    progress_cycle=0 if dense else rng.randint(1, 10),
                )
            )
        recent = [
            job(
                "succeeded",
                started(40),
                attempt=1,
                gpus=rng.choice((0.25, 0.5, 1.0, 2.0)),
                finished_at=now,
            )
            for _ in range(args.recent)
        ]
        ids = [
            *connection.execute(
                insert(Job).returning(Job.id, sort_by_parameter_order=True), running
            ).scalars(),
            *connection.execute(
                insert(Job).returning(Job.id, sort_by_parameter_order=True), recent
            ).scalars(),
        ]
        attempts: list[dict[str, Any]] = []
        for job_id, row in zip(ids, running + recent, strict=True):
            start = started(20)
            if row["status"] == "running" and row["attempt"] == 2:  # a lost first attempt
                first = start - timedelta(hours=rng.uniform(0.5, 10))
                attempts.append(_attempt(job_id, 1, first, start, "lost"))
            ended = None if row["status"] == "running" else start + timedelta(hours=1)
            status = "running" if ended is None else "succeeded"
            attempts.append(_attempt(job_id, row["attempt"], start, ended, status))
        connection.execute(insert(JobAttempt), attempts)
        connection.execute(text("ANALYZE"))
    engine.dispose()
    return [
        Running(job_id, row["attempt"], row["cpus"], row["gpus"])
        for job_id, row in zip(ids[: len(running)], running, strict=True)
    ]


def _attempt(
    job_id: int, number: int, started: datetime, ended: datetime | None, status: str
) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "number": number,
        "token_hash": secrets.token_hex(32),
        "status": status,
        "started_at": started,
        "ended_at": ended,
    }


def requeue(engine: Engine, job_ids: list[int], reasons: dict[int, str | None]) -> None:
    """Undo this tick's claims (launch recorded, not made) and restore the reasons
    the tick rewrote, so that the next tick starts from the same queue."""
    with engine.begin() as connection:
        if job_ids:
            connection.execute(
                delete(JobAttempt).where(
                    JobAttempt.job_id.in_(job_ids),
                    JobAttempt.number
                    == select(Job.attempt).where(Job.id == JobAttempt.job_id).scalar_subquery(),
                )
            )
            connection.execute(
                update(Job)
                .where(Job.id.in_(job_ids))
                .values(status="queued", attempt=Job.attempt - 1, started_at=None)
            )
        now = dict(
            connection.execute(select(Job.id, Job.queue_reason).where(Job.status == "queued")).all()
        )
        changed = [
            {"job": job_id, "reason": reason}
            for job_id, reason in reasons.items()
            if now.get(job_id, reason) != reason
        ]
        if changed:
            table = Job.__table__
            connection.execute(
                update(table)
                .where(table.c.id == bindparam("job"))
                .values(queue_reason=bindparam("reason")),
                changed,
            )


# --- Ray ---------------------------------------------------------------------------


@ray.remote
class Idle:
    """Stands in for an attempt's actor: a name, the job's resources, nothing to do."""

    def ready(self) -> bool:
        return True


def create_actors(wanted: list[tuple[str, str, float, float]], timeout: float) -> None:
    """Detached idle actors (name, namespace, CPUs, GPUs), all up before returning."""
    actors = [
        Idle.options(  # type: ignore[attr-defined]
            name=name, namespace=namespace, lifetime="detached", num_cpus=cpus, num_gpus=gpus
        ).remote()
        for name, namespace, cpus, gpus in wanted
    ]
    ray.get([actor.ready.remote() for actor in actors], timeout=timeout)


def start_actors(address: str, wanted: list[tuple[str, str, float, float]], here: bool) -> None:
    """Create the actors in a helper process (adopted, as after a restart) or here."""
    timeout = 60.0 + 3.0 * len(wanted)
    if here:
        create_actors(wanted, timeout)
        return
    subprocess.run(
        [sys.executable, __file__, HELPER, address, json.dumps(wanted), str(timeout)],
        check=True,
        env={**os.environ, "RAY_AUTH_MODE": "disabled"},
        timeout=timeout + 60,
    )


def helper(address: str, wanted: str, timeout: str) -> None:
    """The helper process: join Ray, create the actors, leave them running."""
    ray.init(address=address, log_to_driver=False, configure_logging=False)
    create_actors([tuple(item) for item in json.loads(wanted)], float(timeout))
    ray.shutdown()


def wait_free(cpus: float, gpus: float, seconds: float = 60.0) -> dict[str, float]:
    """Wait until Ray reports these free CPUs and GPUs (its view lags a kill)."""
    deadline = time.monotonic() + seconds
    while True:
        free = ray_actor.free_resources()
        if math.isclose(free["CPU"], cpus) and math.isclose(free["GPU"], gpus):
            return free
        if time.monotonic() > deadline:
            raise RuntimeError(f"Ray reports {free} free, expected {cpus} CPU, {gpus} GPU")
        time.sleep(0.2)


@contextmanager
def local_ray(folder: Path, cpus: int, gpus: int) -> Iterator[str]:
    state = folder / "ray"
    try:
        yield connect(None, state, num_cpus=cpus, num_gpus=gpus)
    finally:
        ray.shutdown()
        stop_local_head(state)


# --- the run -----------------------------------------------------------------------


def tick(dispatcher: Any, sink: Parts) -> Any:
    TIMER.sink = sink
    started = time.perf_counter()
    try:
        report = dispatcher.tick()
    finally:
        sink.ticks.append(time.perf_counter() - started)
        TIMER.sink, TIMER.stack = None, []
    sink.launched.append(len(report.launched))
    return report


def run(args: argparse.Namespace, folder: Path) -> dict[tuple[str, str], Parts]:
    modules = {"current": importlib.import_module("server.dispatch")}
    if args.baseline:
        modules = {f"at {args.baseline}": baseline_module(args.baseline), **modules}
    for module in modules.values():
        instrument(module)
    instrument_ray()
    results: dict[tuple[str, str], Parts] = {}
    with database("postgresql", folder) as url:
        console.print(
            f"filling {url.rpartition('/')[2]}: {args.history:,} finished, "
            f"{args.queued:,} queued, {args.running} running ..."
        )
        fill(url, args.history)
        running = populate(url, args)
        held_cpus = sum(r.cpus for r in running)
        held_gpus = sum(r.gpus for r in running)
        cpus = math.ceil(held_cpus + args.slack_cpus)
        gpus = math.ceil(held_gpus + args.slack_gpus)
        console.print(
            f"Ray head: {cpus} CPUs, {gpus} GPUs declared; {len(running)} running jobs "
            f"hold {held_cpus:g} CPUs and {held_gpus:g} GPUs ..."
        )
        with local_ray(folder, cpus, gpus) as address:
            started = time.monotonic()
            # Largest GPU requests first, so the fractions pack into whole cards.
            wanted = [
                (ray_actor.actor_name(r.job_id, r.attempt), NAMESPACE, r.cpus, r.gpus)
                for r in sorted(running, key=lambda r: -r.gpus)
            ]
            start_actors(address, wanted, args.actors_from == "here")
            leftover_cpus, leftover_gpus = cpus - held_cpus, gpus - held_gpus
            fillers = [
                ("slack", FILLER_NAMESPACE, float(args.slack_cpus), float(args.slack_gpus)),
                (
                    "rounding",
                    FILLER_NAMESPACE,
                    leftover_cpus - args.slack_cpus,
                    leftover_gpus - args.slack_gpus,
                ),
            ]
            start_actors(address, fillers, here=True)
            wait_free(0.0, 0.0)
            console.print(
                f"{len(wanted)} actors ({ORIGIN[args.actors_from]}) and 2 fillers "
                f"up in {time.monotonic() - started:.0f} s; cluster full"
            )
            engine = make_engine(url)
            time_sql(engine)
            sessions = make_session_factory(engine)
            settings = Settings(
                database_url=url,
                data_dir=folder / "data",
                owner_gpu_quota=args.quota,
                cancel_grace_seconds=3600.0,
                **PREEMPTION_WEIGHED if args.preemption else {},
            )
            dispatchers = {
                name: module.Dispatcher(settings, sessions, api_url="http://127.0.0.1:9")
                for name, module in modules.items()
            }
            for name, dispatcher in dispatchers.items():
                for _ in range(WARMUP_TICKS):  # reasons written, capacity recorded
                    report = tick(dispatcher, Parts())
                    assert not (report.launched or report.lost), (name, report)
            for _ in range(args.ticks):
                for name, dispatcher in dispatchers.items():
                    report = tick(dispatcher, results.setdefault((name, "steady"), Parts()))
                    assert not (report.launched or report.lost or report.killed), (name, report)

            # b. launching: the slack freed, Ray's launch recorded instead of made.
            ray.kill(ray.get_actor("slack", namespace=FILLER_NAMESPACE), no_restart=True)
            wait_free(float(args.slack_cpus), float(args.slack_gpus))
            recorded: list[Any] = []
            ray_actor.launch = recorded.append  # type: ignore[assignment]
            with engine.connect() as connection:
                reasons = dict(
                    connection.execute(
                        select(Job.id, Job.queue_reason).where(Job.status == "queued")
                    ).all()
                )
            for _ in range(args.launch_ticks):
                for name, dispatcher in dispatchers.items():
                    report = tick(dispatcher, results.setdefault((name, "launch"), Parts()))
                    assert not (report.lost or report.killed), (name, report)
                    requeue(engine, report.launched, reasons)
            engine.dispose()
    return results


# --- the report --------------------------------------------------------------------


def report(results: dict[tuple[str, str], Parts], args: argparse.Namespace) -> None:
    table = Table(
        title=f"Dispatcher.tick(): {args.queued:,} queued, {args.running} running, PostgreSQL, "
        f"actors {ORIGIN[args.actors_from]} (ms per tick)"
    )
    for column in ("phase", "code", "ticks", "p50", "p95", "max", "launched/tick"):
        table.add_column(column, justify="left" if column in ("phase", "code") else "right")
    for (name, phase), parts in results.items():
        table.add_row(
            phase,
            name,
            str(len(parts.ticks)),
            f"{percentile_ms(parts.ticks, 0.5):.1f}",
            f"{percentile_ms(parts.ticks, 0.95):.1f}",
            f"{max(parts.ticks) * 1000:.1f}",
            f"{sum(parts.launched) / len(parts.launched):.1f}",
        )
    console.print(table)
    for phase in ("steady", "launch"):
        runs = {name: parts for (name, p), parts in results.items() if p == phase}
        breakdown = Table(
            title=f"{phase}: where a tick's time goes (ms per tick, mean; exclusive; "
            "SQL = statements, COMMIT, ROLLBACK issued inside the part)"
        )
        breakdown.add_column("part")
        for name in runs:
            for column in ("ms", "of it SQL", "calls", "round trips"):
                breakdown.add_column(f"{name}\n{column}", justify="right")
        labels: list[str] = []
        for parts in runs.values():
            for label in [*parts.python, *parts.sql]:
                if label not in labels and label != "tick":
                    labels.append(label)
        labels.append(OTHER)
        for label in labels:
            cells = []
            for parts in runs.values():
                n = len(parts.ticks)
                source = "tick" if label == OTHER else label
                python, sql = parts.python.get(source, 0.0), parts.sql.get(source, 0.0)
                if label == OTHER:
                    sql += parts.sql.get(OTHER, 0.0)
                cells += [
                    f"{(python + sql) / n * 1000:.2f}",
                    f"{sql / n * 1000:.2f}" if sql else "",
                    f"{parts.calls.get(source, 0) / n:.1f}" if label != OTHER else "",
                    f"{parts.statements.get(source, 0) / n:.1f}" if sql else "",
                ]
            breakdown.add_row(label, *cells)
        totals = []
        for parts in runs.values():
            n = len(parts.ticks)
            totals += [f"{sum(parts.ticks) / n * 1000:.2f}", "", "", ""]
        breakdown.add_row("[bold]tick (mean)[/]", *totals)
        console.print(breakdown)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queued", type=int, default=10_000)
    parser.add_argument("--running", type=int, default=100)
    parser.add_argument("--recent", type=int, default=300, help="finished GPU jobs in window")
    parser.add_argument("--history", type=int, default=100_000, help="older finished jobs")
    parser.add_argument("--ticks", type=int, default=40, help="steady ticks per dispatcher")
    parser.add_argument("--launch-ticks", type=int, default=10, help="launching ticks each")
    parser.add_argument("--slack-cpus", type=int, default=24, help="free in the launch phase")
    parser.add_argument("--slack-gpus", type=int, default=4, help="free in the launch phase")
    parser.add_argument("--quota", type=float, default=6.0, help="SILO_OWNER_GPU_QUOTA")
    parser.add_argument("--baseline", metavar="REV", help="also tick server/dispatch.py at REV")
    parser.add_argument("--actors-from", choices=("helper", "here"), default="helper")
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument(
        "--preemption",
        action="store_true",
        help="SILO_PREEMPTION=fair-share, weighed every tick, never due (PREEMPTION_WEIGHED)",
    )
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="silo-dispatch-tick-"))
    try:
        results = run(args, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    report(results, args)


if __name__ == "__main__":
    if sys.argv[1:2] == [HELPER]:
        helper(*sys.argv[2:5])
    else:
        main()
