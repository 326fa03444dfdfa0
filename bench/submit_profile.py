"""Where a submit's time goes: POST /v1/jobs driven in-process, timed part by part.

Run as::

    python bench/submit_profile.py [--backends sqlite,postgresql] [--requests 1000]
        [--clients 8] [--rows 2000] [--queued 0] [--idempotency-keys] [--refuse-unfit]
        [--cprofile 30]

For each backend it makes a fresh database as bench/api_load.py does (a SQLite
file in a temporary folder, or a new PostgreSQL database dropped at the end),
fills it with ``--rows`` finished jobs and ``--queued`` queued ones, and builds
the service's app (server.app.create_app, its lifespan run) beside
bench/ceiling.py's one-row app. Both are called as ASGI apps, no HTTP server:
what uvicorn adds is the same for both and left out. The queue grows with the
submits, as in bench/api_load.py: a submit's answer counts the queued jobs
ahead of it, a cost that grows with the queue (``--queued 5000`` shows it).

1. ``rate``: ``--clients`` concurrent in-process callers POST ``--requests``
   bodies (the digits preset's spec, one tag, as bench/api_load.py sends) to
   each app, uninstrumented, in alternate batches so that whatever else the
   machine does falls on both; the submit's rate over the one-row insert's,
   and the CPU per request of this process and of the local PostgreSQL's.
2. ``parts``: the same requests one at a time with the parts below wrapped in
   timers, each part's time exclusive of the parts it calls; every SQL
   statement and every COMMIT/ROLLBACK is its own ``db:`` part (driver and
   database time; psycopg sends a transaction's BEGIN before its first
   statement, so that statement's time includes it), and the wait for a worker
   thread and back is ``thread hops``. What no part covers (ASGI, middleware,
   routing, FastAPI's dependency solving, the route code between the parts) is
   ``other``. The instrumentation adds a microsecond or two per part.
3. ``--cprofile N``: a cProfile of the submits (sync code run inline, without
   the thread hop, so that one profiler sees it all), its top N functions.

``--idempotency-keys`` sends a fresh Idempotency-Key with each request, as
silo_client does; ``--refuse-unfit`` turns SILO_REFUSE_UNFIT_JOBS on with a
fresh capacity record, so the fit check reads it (the default is off).

What it showed (``--requests 1000 --queued 0 --clients 16``, 2-core machine
shared with other work; µs per submit, one at a time, SQLite / PostgreSQL).
Before (92df9b7) the submit made 7 database calls where the insert makes 3,
spread over two transactions:

    ORM flush of the job and its tags (Python)       371 /  491
    reading the job back for the answer (Python)     270 /  382
    db: the job view and its queue count             180 / 1097
    db: INSERT jobs, INSERT job_tags                  88 /  535  (PG: + BEGIN)
    db: COMMIT; ROLLBACK x3 (the read's, the pool's) 260 /  419
    thread hops (the route's, the session close's)   257 /  309
    row building, ORM add/commit/close               227 /  282
    spec validation, request hash, strict JSON       104 /  139
    other                                            250 /  347
    total                                           2044 / 4057  (one-row insert 686 / 942)
    in-process rate, 16 callers                     0.41x / 0.30x the one-row insert
    PostgreSQL CPU per request                             1230  (one-row insert 100)

After: one INSERT (PostgreSQL: the job and its tags in one statement, outside
a transaction) returns the id, the owner's name and the queue count, and the
answer is built from what was written; the route owns its session (one hop):

    db: the job's insert with its queue count        141 /  951  (PG: with the tags)
    db: INSERT job_tags; COMMIT                      251 /    5  (PG: no transaction)
    thread hops (the route's)                        140 /  125
    row building, ORM commit, JobOut, serialise      129 /  154
    spec validation, request hash, strict JSON        95 /  108
    other                                            345 /  414
    total                                           1129 / 1794  (one-row insert 714 / 947)
    in-process rate, 16 callers                     0.81x / 0.86x the one-row insert
    PostgreSQL CPU per request                              430  (one-row insert 90)

What remains beyond the one-row insert is mostly the database's: the queue
count (about 0.13 µs of PostgreSQL CPU and 0.03 µs of SQLite per queued job
ahead), the job's nine indexes and its tags (more pages for SQLite's commit to
write and sync), then the service's own checks (strict JSON, spec, middleware).
Since these figures SQLite syncs its log at checkpoints, not at every commit
(``synchronous=NORMAL``), and counts the queue after its commit, outside the
one-writer section (docs/benchmarks.md has the rates that followed).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import functools
import io
import json
import os
import pstats
import re
import shutil
import tempfile
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from api_load import DIGITS_SPEC, database, fill
from ceiling import one_row_app
from rich.console import Console
from rich.table import Table
from sqlalchemy import event, insert
from sqlalchemy.engine import Engine

from server.db.models import Job, utcnow
from server.db.session import make_engine, make_session_factory
from server.jobs import cluster
from server.settings import Settings

console = Console(width=160)

# (label, module, attribute): the parts timed; a missing attribute is skipped,
# so the script runs against older and newer versions of the route.
PARTS: tuple[tuple[str, str, str], ...] = (
    ("body: strict JSON parse", "server.api.routing", "parse_body"),
    ("body: JobSubmit validation", "fastapi.dependencies.utils", "request_body_to_args"),
    ("auth: caller", "server.api.jobs", "submitter"),
    ("auth: caller", "server.api.deps", "current_user"),
    ("auth: token cache", "server.auth.tokens", "TokenCache.get"),
    ("spec validation (parse_spec)", "server.api.jobs", "_validate_spec"),
    ("weights check", "server.api.jobs", "check_weights"),
    ("fit check", "server.api.jobs", "refuse_unfit"),
    ("request hash", "server.jobs.repository", "request_hash"),
    ("idempotency lookup", "server.jobs.repository", "find_by_idempotency_key"),
    ("row building (spec dump, identities)", "server.jobs.repository", "queued_job"),
    ("row building (spec dump, identities)", "server.jobs.repository", "spec_columns"),
    ("SQLite: the writes and commit", "server.jobs.sqlite_submits", "GroupCommit._transaction"),
    ("ORM add", "sqlalchemy.orm", "Session.add"),
    ("ORM flush", "sqlalchemy.orm", "Session.flush"),
    ("ORM commit", "sqlalchemy.orm", "Session.commit"),
    ("response: read the job back", "server.api.job_out", "detail"),
    ("response: build JobOut", "server.jobs.repository", "_submitted"),
    ("response: build JobOut", "server.api.job_out", "detail_of"),
    ("response: serialise", "server.api.jobs", "_answer"),
    ("session close", "sqlalchemy.orm", "Session.close"),
)
OTHER = "other: ASGI, middleware, routing, FastAPI, route code"
HOPS = "thread hops"
ROUNDS = 5  # alternate batches of submits and inserts


# --- timing ------------------------------------------------------------------------


@dataclass
class Frame:
    label: str
    started: float
    children: float = 0.0


@dataclass
class Timer:
    """Exclusive time per label. Requests run one at a time in ``parts``, so one
    stack serves the event loop and the worker thread alike."""

    totals: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    stack: list[Frame] = field(default_factory=list)
    on: bool = False

    def enter(self, label: str) -> None:
        if self.on:
            self.stack.append(Frame(label, time.perf_counter()))

    def leave(self) -> None:
        if not self.on or not self.stack:
            return
        frame = self.stack.pop()
        elapsed = time.perf_counter() - frame.started
        self.totals[frame.label] += elapsed - frame.children
        self.counts[frame.label] += 1
        if self.stack:
            self.stack[-1].children += elapsed

    def add(self, label: str, seconds: float) -> None:
        """Time spent outside every part's own code (a thread hop)."""
        if not self.on:
            return
        self.totals[label] += seconds
        self.counts[label] += 1
        if self.stack:
            self.stack[-1].children += seconds

    def reset(self) -> None:
        self.totals.clear()
        self.counts.clear()
        self.stack.clear()


TIMER = Timer()


def _timed(label: str, func: Callable[..., Any]) -> Callable[..., Any]:
    if asyncio.iscoroutinefunction(func):

        @functools.wraps(func)
        async def timed_async(*args: Any, **kwargs: Any) -> Any:
            TIMER.enter(label)
            try:
                return await func(*args, **kwargs)
            finally:
                TIMER.leave()

        return timed_async

    @functools.wraps(func)
    def timed(*args: Any, **kwargs: Any) -> Any:
        TIMER.enter(label)
        try:
            return func(*args, **kwargs)
        finally:
            TIMER.leave()

    return timed


def instrument() -> list[str]:
    """Wrap PARTS in timers; the labels found."""
    import importlib

    found = []
    for label, module_name, attribute in PARTS:
        owner: Any = importlib.import_module(module_name)
        *path, name = attribute.split(".")
        for part in path:
            owner = getattr(owner, part)
        if not hasattr(owner, name):
            continue
        setattr(owner, name, _timed(label, getattr(owner, name)))
        found.append(label)
    _time_thread_hops()
    _time_statements()
    return found


def _time_thread_hops() -> None:
    """The wait for a worker thread and for the event loop after it, wherever
    FastAPI or the service's dependencies hop."""
    import fastapi.routing

    import server.api.deps

    for module in (fastapi.routing, server.api.deps):
        original = module.run_in_threadpool

        async def hop(func: Callable[..., Any], *args: Any, _run: Any = original, **kw: Any) -> Any:
            called = time.perf_counter()
            marks: list[float] = []

            def inner() -> Any:
                TIMER.add(HOPS, time.perf_counter() - called)
                try:
                    return func(*args, **kw)
                finally:
                    marks.append(time.perf_counter())

            try:
                return await _run(inner)
            finally:
                if marks:
                    TIMER.add(HOPS, time.perf_counter() - marks[0])

        module.run_in_threadpool = hop  # type: ignore[attr-defined]


_TABLE = re.compile(r"^\s*(?:INSERT INTO|UPDATE|DELETE FROM)\s+(\w+)|FROM\s+(\w+)", re.I | re.S)
_INSERTED = re.compile(r"INSERT INTO (\w+)", re.I)


def statement_label(sql: str) -> str:
    """db: the verb and table (a WITH: every table it inserts into); the queue count."""
    verb = sql.split(None, 1)[0].upper() if sql.strip() else "?"
    if verb == "WITH" and (tables := _INSERTED.findall(sql)):
        label = f"db: INSERT {' + '.join(tables)} (one statement)"
    else:
        matches = _TABLE.findall(sql)
        table = next((a or b for a, b in reversed(matches) if a or b), "") if matches else ""
        if verb == "INSERT" and matches:
            table = matches[0][0] or table
        label = f"db: {verb} {table}".rstrip()
    return label + (" + queue count" if "count(" in sql.lower() else "")


def _time_statements() -> None:
    """Every statement (driver and database time), and COMMIT/ROLLBACK."""

    @event.listens_for(Engine, "before_cursor_execute")
    def before(*args: Any) -> None:
        TIMER.enter(statement_label(args[2]))

    @event.listens_for(Engine, "after_cursor_execute")
    def after(*_: Any) -> None:
        TIMER.leave()

    @event.listens_for(Engine, "handle_error")
    def failed(*_: Any) -> None:
        TIMER.leave()


def time_transactions(engine: Engine) -> None:
    dialect = type(engine.dialect)
    for name, label in (("do_commit", "db: COMMIT"), ("do_rollback", "db: ROLLBACK")):
        if not getattr(dialect, f"_timed_{name}", False):
            setattr(dialect, name, _timed(label, getattr(dialect, name)))
            setattr(dialect, f"_timed_{name}", True)


# --- the apps, called in-process ----------------------------------------------------


@asynccontextmanager
async def running(app: Any) -> AsyncIterator[None]:
    """The app's lifespan, started and finally shut down."""
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    task = asyncio.create_task(app(scope, inbox.get, outbox.put))
    await inbox.put({"type": "lifespan.startup"})
    message = await outbox.get()
    if message["type"] != "lifespan.startup.complete":
        raise SystemExit(f"lifespan: {message}")
    try:
        yield
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        await outbox.get()
        await task


async def call(
    app: Any, path: str, token: str, body: bytes, key: str | None = None
) -> tuple[int, bytes]:
    """POST ``body`` to ``path`` (with an Idempotency-Key ``key``); (status, response body)."""
    done = asyncio.Event()
    headers = [
        (b"host", b"bench"),
        (b"authorization", f"Bearer {token}".encode()),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if key is not None:
        headers.append((b"idempotency-key", key.encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
        "state": {},
    }
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await done.wait()
        return {"type": "http.disconnect"}

    status, chunks = 0, []

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    try:
        await app(scope, receive, send)
    finally:
        done.set()
    return status, b"".join(chunks)


def submit_body(n: int) -> bytes:
    return json.dumps({"spec": {**DIGITS_SPEC, "seed": n}, "tags": ["bench"]}).encode()


@dataclass
class Load:
    """Where and how to POST: the app, its path, the token, fresh idempotency keys or none."""

    app: Any
    path: str
    token: str
    keys: bool
    sent: int = 0


async def drive(load: Load, requests: int, clients: int) -> float:
    """``requests`` POSTs from ``clients`` concurrent callers; the seconds taken."""
    first, load.sent = load.sent, load.sent + requests
    bodies = [(submit_body(n), f"key-{n}" if load.keys else None) for n in range(first, load.sent)]
    queue = iter(bodies)

    async def client() -> None:
        for body, key in queue:
            status, answer = await call(load.app, load.path, load.token, body, key)
            if status >= 400:
                raise SystemExit(f"{load.path}: HTTP {status}: {answer[:300]!r}")

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return time.perf_counter() - started


# --- the profile ------------------------------------------------------------------


def add_queued(url: str, count: int) -> None:
    engine = make_engine(url)
    with engine.begin() as connection:
        owner = 1
        start = utcnow() - timedelta(hours=1)
        for first in range(0, count, 5000):
            connection.execute(
                insert(Job),
                [
                    {
                        "owner_id": owner,
                        "spec": DIGITS_SPEC,
                        "spec_hash": f"{n:064x}",
                        "status": "queued",
                        "priority": 0,
                        "created_at": start + timedelta(milliseconds=n),
                        "attempt": 0,
                    }
                    for n in range(first, min(count, first + 5000))
                ],
            )
    engine.dispose()


def postgres_cpu() -> float:
    """CPU seconds the PostgreSQL processes on this machine have used (0 where
    /proc does not say), so that a pass's database work can be told apart."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name, _, rest = text.partition(") ")
        if name.endswith("(postgres"):
            fields = rest.split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def record_capacity(url: str) -> None:
    engine = make_engine(url)
    with make_session_factory(engine).begin() as session:
        nodes = [{"CPU": 64.0, "GPU": 8.0, "memory_gb": 512.0}]
        capacity = cluster.Capacity.of(nodes)
        assert capacity is not None
        cluster.record(session, capacity)
    engine.dispose()


@dataclass
class Profile:
    backend: str
    requests: int
    submit_seconds: float
    insert_seconds: float
    submit_cpu: float  # this process's CPU seconds in the rate pass
    insert_cpu: float
    submit_db_cpu: float | None  # the PostgreSQL processes' (this machine's), if any
    insert_db_cpu: float | None
    submit_parts: dict[str, float]
    insert_parts: dict[str, float]
    submit_counts: dict[str, int]
    insert_counts: dict[str, int]
    submit_total: float
    insert_total: float
    cprofile: str = ""


async def profile_backend(backend: str, args: argparse.Namespace, folder: Path) -> Profile:
    with database(backend, folder) as url:
        token = fill(url, args.rows)
        add_queued(url, args.queued)
        if args.refuse_unfit:
            record_capacity(url)
        from server.app import create_app

        settings = Settings(
            database_url=url,
            data_dir=folder / "data",
            dispatcher=False,
            refuse_unfit_jobs=args.refuse_unfit,
        )
        app = create_app(settings)
        ceiling = one_row_app(url, settings.database_pool_size)
        async with running(app):
            time_transactions(app.state.engine)
            loads = {
                "submit": Load(app, "/v1/jobs", token, args.idempotency_keys),
                "insert": Load(ceiling, "/items", token, args.idempotency_keys),
            }
            n = args.requests
            batch = max(1, n // ROUNDS)
            # Warm both (caches, pools, statement caches), then time each in
            # alternate batches, so that what else the machine does falls on both.
            for load in loads.values():
                await drive(load, 100, args.clients)
            rate = dict.fromkeys(loads, 0.0)
            cpu = dict.fromkeys(loads, 0.0)
            db_cpu = dict.fromkeys(loads, 0.0)
            for _ in range(ROUNDS):
                for name, load in loads.items():
                    started, db_started = time.process_time(), postgres_cpu()
                    rate[name] += await drive(load, batch, args.clients)
                    cpu[name] += time.process_time() - started
                    db_cpu[name] += postgres_cpu() - db_started

            global TIMER
            timers = {name: Timer(on=True) for name in loads}
            spent = dict.fromkeys(loads, 0.0)
            for _ in range(ROUNDS):
                for name, load in loads.items():
                    TIMER = timers[name]
                    spent[name] += await drive(load, batch, 1)
            TIMER = Timer()

            text = ""
            if args.cprofile:
                text = await cprofile_submits(loads["submit"], batch * ROUNDS, args.cprofile)
        return Profile(
            backend,
            batch * ROUNDS,
            rate["submit"],
            rate["insert"],
            cpu["submit"],
            cpu["insert"],
            db_cpu["submit"] if backend == "postgresql" else None,
            db_cpu["insert"] if backend == "postgresql" else None,
            dict(timers["submit"].totals),
            dict(timers["insert"].totals),
            dict(timers["submit"].counts),
            dict(timers["insert"].counts),
            spent["submit"],
            spent["insert"],
            text,
        )


async def cprofile_submits(load: Load, requests: int, top: int) -> str:
    """cProfile of sequential submits, their sync parts run inline."""
    import fastapi.routing

    import server.api.deps

    saved = fastapi.routing.run_in_threadpool, server.api.deps.run_in_threadpool

    async def inline(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return func(*args, **kwargs)

    fastapi.routing.run_in_threadpool = inline  # type: ignore[attr-defined]
    server.api.deps.run_in_threadpool = inline  # type: ignore[assignment]
    profiler = cProfile.Profile()
    try:
        profiler.enable()
        await drive(load, requests, 1)
        profiler.disable()
    finally:
        fastapi.routing.run_in_threadpool, server.api.deps.run_in_threadpool = saved  # type: ignore[assignment]
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("cumulative").print_stats(top)
    stats.sort_stats("tottime").print_stats(top)
    return out.getvalue()


def report(profile: Profile) -> None:
    n = profile.requests
    submit_rate = n / profile.submit_seconds
    insert_rate = n / profile.insert_seconds
    console.print(
        f"[bold]{profile.backend}[/]: in-process rate, {n} requests each: submit "
        f"{submit_rate:,.0f}/s, one-row insert {insert_rate:,.0f}/s: "
        f"[bold]{submit_rate / insert_rate:.2f}x[/] (bench/api_load.py's ratio over HTTP "
        "differs: uvicorn and the load generator add the same work to both)"
    )
    console.print(
        f"CPU of this process per request (the app, its driver, the callers): submit "
        f"{profile.submit_cpu / n * 1e6:,.0f} µs, one-row insert "
        f"{profile.insert_cpu / n * 1e6:,.0f} µs"
    )
    if profile.submit_db_cpu is not None and profile.insert_db_cpu is not None:
        console.print(
            f"CPU of the PostgreSQL processes per request: submit "
            f"{profile.submit_db_cpu / n * 1e6:,.0f} µs, one-row insert "
            f"{profile.insert_db_cpu / n * 1e6:,.0f} µs"
        )
    submit_us = profile.submit_total / n * 1e6
    insert_us = profile.insert_total / n * 1e6
    submit = dict(profile.submit_parts)
    insert = dict(profile.insert_parts)
    submit[OTHER] = profile.submit_total - sum(submit.values())
    insert[OTHER] = profile.insert_total - sum(insert.values())
    table = Table(
        title=f"{profile.backend}: one submit, part by part (µs per request, {n} sequential "
        f"requests, exclusive times)"
    )
    for column in ("part", "submit µs", "share", "calls/req", "one-row insert µs", "calls/req "):
        table.add_column(column, justify="left" if column == "part" else "right")
    labels = sorted(set(submit) | set(insert), key=lambda label: -submit.get(label, 0.0))
    for label in labels:
        s, i = submit.get(label), insert.get(label)
        table.add_row(
            label,
            "" if s is None else f"{s / n * 1e6:,.0f}",
            "" if s is None else f"{s / profile.submit_total:.0%}",
            "" if label == OTHER else f"{profile.submit_counts.get(label, 0) / n:.1f}",
            "" if i is None else f"{i / n * 1e6:,.0f}",
            "" if label == OTHER else f"{profile.insert_counts.get(label, 0) / n:.1f}",
        )
    table.add_row("[bold]total[/]", f"{submit_us:,.0f}", "100%", "", f"{insert_us:,.0f}", "")
    console.print(table)
    round_trips = sum(
        count for label, count in profile.submit_counts.items() if label.startswith("db:")
    )
    ceiling_trips = sum(
        count for label, count in profile.insert_counts.items() if label.startswith("db:")
    )
    console.print(
        f"database calls per request (statements, COMMIT, ROLLBACK): submit "
        f"{round_trips / n:.1f}, one-row insert {ceiling_trips / n:.1f}"
    )
    if profile.cprofile:
        console.print(profile.cprofile, markup=False, highlight=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--requests", type=int, default=1000, help="per pass and app")
    parser.add_argument("--clients", type=int, default=8, help="concurrent callers (rate)")
    parser.add_argument("--rows", type=int, default=2000, help="finished jobs in the table")
    parser.add_argument("--queued", type=int, default=0, help="queued jobs before the submits")
    parser.add_argument(
        "--idempotency-keys",
        action="store_true",
        help="a fresh Idempotency-Key per request, as silo_client sends",
    )
    parser.add_argument("--refuse-unfit", action="store_true", help="SILO_REFUSE_UNFIT_JOBS on")
    parser.add_argument("--cprofile", type=int, default=0, metavar="N", help="top N functions")
    args = parser.parse_args()
    instrument()
    for backend in args.backends.split(","):
        folder = Path(tempfile.mkdtemp(prefix=f"silo-submit-profile-{backend}-"))
        try:
            report(asyncio.run(profile_backend(backend, args, folder)))
        finally:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
