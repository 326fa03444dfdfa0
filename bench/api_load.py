"""API load: submit and status-poll rates under concurrent clients, list latency at 100k jobs.

Run as::

    python bench/api_load.py [--backends sqlite,postgresql] [--clients 16]
        [--seconds 10] [--rows 100000] [--list-requests 200]

For each backend it makes a fresh database (a SQLite file in a temporary folder;
a new PostgreSQL database, dropped at the end), migrates it, fills it with
``--rows`` finished jobs from 20 owners over 90 days (so every phase runs against
a table of that size), and starts ``silo serve``: one uvicorn process, one worker,
the way a team would run one replica. This process is the load generator
(asyncio and a small hand-written HTTP/1.1 client, one keep-alive connection
per client); on a 2-core machine client and
server share the cores, so the rates are a floor for the server alone.

Phases, each ``--seconds`` long after one second of warm-up:

* ``submit``: ``--clients`` clients POST /v1/jobs with the digits preset's spec
  (each request fully validated, stored with its tags, answered with the job);
* ``poll running``: ``--clients`` clients GET /v1/jobs/{id} on 200 of the jobs
  just submitted, started the way the dispatcher starts them (progress, ETA);
  this is what ``silo watch`` and the dashboard poll;
* ``poll queued``: the same on 200 jobs still queued, the newest, so each poll
  also counts the thousands of queued jobs ahead of it (its queue position);

then one client times ``--list-requests`` calls of each list query: the newest
page, a page deep in the table (by cursor), and pages filtered by status, by
owner and by tag.

Ceilings, measured in the same run on the same database and machine (bench/ceiling.py:
minimal FastAPI apps, each its own process under the same uvicorn options):

* ``ceiling: one-row insert``: right after ``submit``, the same clients POST
  the same bodies to an app that validates them and inserts one row;
* ``ceiling: one-row poll``: right after the service's polls, the same clients
  GET the running jobs' ids from an app that reads a few columns of that row;
* ``ceiling: memory poll``: the same GETs answered from memory, no database.

The table gives requests/second where clients run concurrently, p50 and p99
latency in milliseconds, the service's rate as a ratio of each ceiling's, and
the targets, as ratios so they hold on any machine: polls of running jobs
>= 1.0x the one-row app with p99 < 50 ms; submits >= 0.7x the one-row insert.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import yaml
from ceiling import ceiling_server
from rich.console import Console
from rich.table import Table
from serve import silo_serve_process
from sqlalchemy import create_engine, insert, inspect, select, text
from sqlalchemy.engine import make_url

from server.auth.tokens import create_user_token
from server.db.migrate import upgrade
from server.db.models import Job, JobTag, User, utcnow
from server.db.session import make_engine, make_session_factory
from server.jobs.claims import claim_next
from server.jobs.views import encode_cursor

PG_ADMIN_URL = os.environ.get(
    "SILO_BENCH_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
DIGITS_SPEC = yaml.safe_load(
    (Path(__file__).parents[1] / "silo_core" / "presets" / "digits-silo.yaml").read_text()
)
OWNERS = 20
POLLED_JOBS = 200
POLL_TARGET = 1.0  # the service's polls of running jobs / the one-row app's polls
NOT_MODIFIED_TARGET = 0.8  # polls answered 304 (ETag held) / the from-memory app's polls
SUBMIT_TARGET = 0.7  # the service's submits / the one-row app's inserts
FINISHED = ("succeeded", "succeeded", "succeeded", "failed", "cancelled")
TAGS = ("resnet", "vgg", "ablation", "nightly")
console = Console(width=160)


@dataclass
class Result:
    backend: str
    phase: str
    clients: int
    latencies: list[float]
    seconds: float
    target: str = ""
    met: bool | None = None
    ratio: str = ""

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds

    def percentile(self, q: float) -> float:
        return percentile_ms(self.latencies, q)


def percentile_ms(latencies: list[float], q: float) -> float:
    """The ``q`` quantile of latencies in seconds, in milliseconds."""
    ordered = sorted(latencies)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


# --- databases and the server -------------------------------------------------


@contextmanager
def database(backend: str, folder: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{folder / 'silo.db'}"
        return
    name = f"silo_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def fill(url: str, rows: int) -> str:
    """Migrate, add ``rows`` finished jobs, and return a token for user0."""
    upgrade(url)
    engine = make_engine(url)
    with make_session_factory(engine).begin() as session:
        token = create_user_token(session, "user0")
        for n in range(1, OWNERS):
            session.add(User(name=f"user{n}"))
    with engine.begin() as connection:
        owners = [row.id for row in connection.execute(select(User.id).order_by(User.id))]
        rng = random.Random(0)
        start = utcnow() - timedelta(days=90)
        step = timedelta(days=90) / max(rows, 1)
        for first in range(0, rows, 5000):
            batch = range(first, min(rows, first + 5000))
            connection.execute(
                insert(Job),
                [
                    {
                        "owner_id": rng.choice(owners),
                        "spec": DIGITS_SPEC,
                        "spec_hash": f"{n:064x}",
                        "status": rng.choice(FINISHED),
                        "priority": 0,
                        "created_at": start + step * n,
                        "attempt": 1,
                    }
                    for n in batch
                ],
            )
        tagged = connection.execute(select(Job.id).where(Job.id % 10 == 0)).scalars().all()
        if tagged:
            connection.execute(
                insert(JobTag), [{"job_id": job_id, "tag": TAGS[job_id % 4]} for job_id in tagged]
            )
        if engine.dialect.name == "postgresql":
            connection.execute(text("ANALYZE"))
    engine.dispose()
    return token


@contextmanager
def server(url: str, folder: Path, workers: int = 1) -> Iterator[str]:
    env = {
        "SILO_DATABASE_URL": url,
        "SILO_DATA_DIR": str(folder / "data"),
        "SILO_DISPATCHER": "false",  # the API alone: nothing here runs jobs
    }
    options = ["--workers", str(workers)] if workers > 1 else []
    with silo_serve_process(folder, env, ready_seconds=60, args=options) as (base, _):
        yield base


# --- load ---------------------------------------------------------------------


class RawConnection:
    """A keep-alive HTTP/1.1 connection that sends prepared requests.

    Hand-written because the load generator shares this machine's two cores with
    the server it measures: httpx spends about 1 ms of CPU per request, this
    about a tenth of that, leaving the cores to the server.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, base: str) -> RawConnection:
        host, port = base.removeprefix("http://").split(":")
        return cls(*await asyncio.open_connection(host, int(port)))

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


def prepare(
    method: str, path: str, token: str, body: object = None, if_none_match: str | None = None
) -> bytes:
    payload = b"" if body is None else json.dumps(body).encode()
    condition = f"If-None-Match: {if_none_match}\r\n" if if_none_match else ""
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\n"
        f"{condition}Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    )
    return head.encode() + payload


def current_tags(base: str, token: str, ids: list[int]) -> list[str]:
    """The ETag each job's poll answers now (what a client that polled it holds)."""
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}) as client:
        return [client.get(f"/v1/jobs/{job_id}").headers["ETag"] for job_id in ids]


async def hammer(
    base: str, requests: Callable[[int], bytes], clients: int, seconds: float
) -> tuple[list[float], float]:
    """``clients`` connections sending ``requests(n)`` for ``seconds`` after 1 s warm-up."""
    latencies: list[float] = []
    counter = itertools.count()
    connections = [await RawConnection.open(base) for _ in range(clients)]
    warm_until = time.perf_counter() + 1.0
    end = warm_until + seconds

    async def loop(connection: RawConnection) -> None:
        while (started := time.perf_counter()) < end:
            status, body = await connection.request(requests(next(counter)))
            if status >= 400:
                raise SystemExit(f"HTTP {status}: {body[:300]!r}")
            if started >= warm_until:
                latencies.append(time.perf_counter() - started)

    try:
        await asyncio.gather(*(loop(connection) for connection in connections))
    finally:
        for connection in connections:
            connection.close()
    return latencies, seconds


def run_phases(backend: str, args: argparse.Namespace, folder: Path) -> list[Result]:
    results = []
    with database(backend, folder) as url:
        started = time.perf_counter()
        token = fill(url, args.rows)
        console.print(
            f"{backend}: {args.rows} jobs stored in {time.perf_counter() - started:.1f} s"
        )
        with ExitStack() as stack:
            base = stack.enter_context(server(url, folder, args.workers))
            one_row = stack.enter_context(ceiling_server("one-row", url, folder))
            memory = stack.enter_context(ceiling_server("memory", url, folder))
            running: list[int] = []
            queued: list[int] = []
            for clients in args.clients:

                def load(
                    target: str, requests: Callable[[int], bytes], phase: str, n: int = clients
                ) -> Result:
                    latencies, seconds = asyncio.run(hammer(target, requests, n, args.seconds))
                    return Result(backend, phase, n, latencies, seconds)

                results += submit_phases(load, base, one_row, token)
                if not running:  # started once: later rounds poll the same jobs
                    running, queued = start_some(url, POLLED_JOBS)
                results += poll_phases(load, base, one_row, memory, token, running, queued)
            results.extend(list_phases(backend, url, base, token, args.list_requests))
    return results


Load = Callable[[str, Callable[[int], bytes], str], Result]


def submit_phases(load: Load, base: str, one_row: str, token: str) -> list[Result]:
    def body(n: int) -> dict[str, object]:
        return {"spec": {**DIGITS_SPEC, "seed": n}, "tags": ["bench"]}

    submit = load(base, lambda n: prepare("POST", "/v1/jobs", token, body(n)), "submit")
    ceiling = load(
        one_row, lambda n: prepare("POST", "/items", token, body(n)), "ceiling: one-row insert"
    )
    ratio = submit.rate / ceiling.rate
    submit.ratio = f"{ratio:.2f}x one-row"
    submit.target, submit.met = f">= {SUBMIT_TARGET}x one-row", ratio >= SUBMIT_TARGET
    return [submit, ceiling]


def poll_phases(
    load: Load,
    base: str,
    one_row: str,
    memory: str,
    token: str,
    running: list[int],
    queued: list[int],
) -> list[Result]:
    tags = current_tags(base, token, running)
    polls: dict[str, Result] = {}
    for phase, target, path, ids, held in (
        ("poll running", base, "/v1/jobs", running, None),
        ("poll running, ETag held (304)", base, "/v1/jobs", running, tags),
        ("poll queued", base, "/v1/jobs", queued, None),
        ("ceiling: one-row poll", one_row, "/items", running, None),
        ("ceiling: memory poll", memory, "/items", running, None),
    ):
        prepared = [
            prepare("GET", f"{path}/{job_id}", token, if_none_match=held[i] if held else None)
            for i, job_id in enumerate(ids)
        ]
        polls[phase] = load(target, lambda n, p=prepared: p[n % len(p)], phase)
    row_rate, memory_rate = polls["ceiling: one-row poll"].rate, polls["ceiling: memory poll"].rate
    poll = polls["poll running"]
    over_row = poll.rate / row_rate
    poll.ratio = f"{over_row:.2f}x one-row, {poll.rate / memory_rate:.2f}x memory"
    poll.target = f">= {POLL_TARGET}x one-row, p99 < 50 ms"
    poll.met = over_row >= POLL_TARGET and poll.percentile(0.99) < 50
    held = polls["poll running, ETag held (304)"]
    over_memory = held.rate / memory_rate
    held.ratio = f"{held.rate / row_rate:.2f}x one-row, {over_memory:.2f}x memory"
    held.target = f">= {NOT_MODIFIED_TARGET}x memory"
    held.met = over_memory >= NOT_MODIFIED_TARGET
    return list(polls.values())


def start_some(url: str, count: int) -> tuple[list[int], list[int]]:
    """Start ``count`` of the submitted jobs the way a dispatcher does (claim_next)
    and give each some progress; return those ids and ``count`` still queued.

    Then VACUUM ANALYZE (PostgreSQL), so autovacuum, woken by the submits and
    the ceiling's inserts, does not run in the middle of the polls.
    """
    engine = make_engine(url)
    factory = make_session_factory(engine)
    running = []
    for _ in range(count):
        with factory.begin() as session:
            claim = claim_next(session, api_url=url, artifact_root="unused")
            job = session.get_one(Job, claim.job_id)
            job.progress_cycle, job.progress_epoch, job.progress_sparsity = 3, 4, 0.488
            job.best_accuracy = 0.95
            running.append(claim.job_id)
    with factory() as session:
        queued = session.scalars(
            select(Job.id).where(Job.status == "queued").order_by(Job.id.desc()).limit(count)
        ).all()
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            tables = [
                "jobs",
                *(["ceiling_items"] if inspect(engine).has_table("ceiling_items") else []),
            ]
            connection.execute(text(f"VACUUM ANALYZE {', '.join(tables)}"))
    engine.dispose()
    return running, list(queued)


def list_phases(backend: str, url: str, base: str, token: str, requests: int) -> list[Result]:
    engine = make_engine(url)
    with make_session_factory(engine)() as session:
        middle = session.scalar(
            select(Job).order_by(Job.id).offset(session.query(Job).count() // 2)
        )
        deep_cursor = encode_cursor(middle)
    engine.dispose()
    queries = {
        "list newest": {},
        "list deep (cursor)": {"cursor": deep_cursor},
        "list status=failed": {"status": "failed"},
        "list owner=user7": {"owner": "user7"},
        "list tag=ablation": {"tag": "ablation"},
    }
    results = []
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}) as client:
        for phase, params in queries.items():
            latencies = []
            for _ in range(requests):
                started = time.perf_counter()
                response = client.get("/v1/jobs", params={**params, "limit": 50})
                latencies.append(time.perf_counter() - started)
                if response.status_code != 200 or not response.json()["items"]:
                    raise SystemExit(f"{phase}: {response.status_code} {response.text[:300]}")
            results.append(Result(backend, phase, 1, latencies, sum(latencies)))
    return results


def report(results: list[Result], rows: int, workers: int) -> None:
    table = Table(title=f"API load, {workers} uvicorn worker(s), {rows} jobs in the table")
    for column in ("backend", "phase", "clients", "requests", "req/s", "p50 ms", "p99 ms"):
        table.add_column(column, justify="left" if column in ("backend", "phase") else "right")
    table.add_column("ratio", justify="right")
    table.add_column("target")
    for r in results:
        verdict = "" if r.met is None else (" [green]met[/]" if r.met else " [red]missed[/]")
        table.add_row(
            r.backend,
            r.phase,
            str(r.clients),
            str(len(r.latencies)),
            f"{r.rate:,.0f}",
            f"{r.percentile(0.5):.1f}",
            f"{r.percentile(0.99):.1f}",
            r.ratio,
            r.target + verdict,
        )
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument(
        "--clients",
        type=lambda text: [int(n) for n in text.split(",")],
        default=[16],
        help="concurrent clients; a comma-separated list runs the load phases for each",
    )
    parser.add_argument("--workers", type=int, default=1, help="silo serve --workers")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--list-requests", type=int, default=200)
    args = parser.parse_args()
    results: list[Result] = []
    for backend in args.backends.split(","):
        folder = Path(tempfile.mkdtemp(prefix=f"silo-bench-{backend}-"))
        try:
            results.extend(run_phases(backend, args, folder))
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    report(results, args.rows, args.workers)


if __name__ == "__main__":
    main()
