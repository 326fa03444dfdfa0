"""Open streams: the status poll and the server's idle CPU with 0 and with N streams open.

Run as::

    python bench/streams.py [--backends sqlite,postgresql] [--streams 1000]
        [--jobs 500] [--clients 4] [--seconds 8] [--idle-seconds 5]

For each backend it makes a fresh database (a SQLite file in a temporary
folder; a new PostgreSQL database, dropped at the end), adds ``--jobs``
running jobs, each with one line in its attempt's ``worker.log``, spread over
as many users as the default stream limit (16 per user) needs for
``--streams`` streams, and starts ``silo serve`` (one uvicorn process, no
dispatcher). Then, side by side in one run:

* ``0 streams``: the server idles for ``--idle-seconds`` (its CPU time is read
  from /proc/<pid>/stat before and after), then ``--clients`` clients poll
  GET /v1/jobs/{id} of the running jobs for ``--seconds`` after one second of
  warm-up (api_load.py's keep-alive client);
* ``N streams``: ``--streams`` streams are opened on their own sockets, half
  event streams (GET /v1/jobs/{id}/events/stream), half followed logs
  (GET /v1/jobs/{id}/logs?follow=true), two per job, and kept open while the
  server idles and is polled again as above. Then a line is appended to 20
  followed logs and the time until each arrives is taken; the streams are
  closed at the end, and every one must still have been open;
* ``0 streams, again``: the polls once more after the streams are closed, so
  the two 0-streams rows show how much the figures move by themselves.

The table gives, per backend and phase, the polls' req/s, p50 and p99 in ms,
the server's CPU while idle (percent of one core) and its resident memory,
and each later row as ratios of the first 0-streams row.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from api_load import DIGITS_SPEC, database, hammer, percentile_ms, prepare
from rich.console import Console
from rich.table import Table
from serve import silo_serve_process
from sqlalchemy import insert, select, text

from server.auth.tokens import create_user_token
from server.db.migrate import upgrade
from server.db.models import Job, User, utcnow
from server.db.session import make_engine, make_session_factory
from server.settings import Settings
from silo_contract.layout import attempt_log

PER_USER = Settings.model_fields["max_streams_per_user"].default
DELIVERY_PROBES = 20
console = Console(width=120)


@dataclass
class Phase:
    backend: str
    streams: str
    latencies: list[float]
    seconds: float
    idle_cpu: float  # percent of one core
    rss_mib: float
    open_seconds: float = 0.0
    delivered: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds

    def percentile(self, q: float) -> float:
        return percentile_ms(self.latencies, q)


# --- the database -----------------------------------------------------------------


def fill(url: str, users: int, jobs: int, artifact_root: Path) -> tuple[list[str], list[int]]:
    """Migrate, add ``users`` users with a token each and ``jobs`` running jobs
    (owned in turn; every user reads every job), each with a first log line;
    return the tokens and job ids."""
    upgrade(url)
    engine = make_engine(url)
    tokens = []
    with make_session_factory(engine).begin() as session:
        for n in range(users):
            tokens.append(create_user_token(session, f"user{n}"))
    with engine.begin() as connection:
        owners = [row.id for row in connection.execute(select(User.id).order_by(User.id))]
        now = utcnow()
        connection.execute(
            insert(Job),
            [
                {
                    "owner_id": owners[n % len(owners)],
                    "spec": DIGITS_SPEC,
                    "spec_hash": f"{n:064x}",
                    "status": "running",
                    "priority": 0,
                    "attempt": 1,
                    "started_at": now,
                    "progress_cycle": 3,
                    "progress_epoch": 4,
                    "progress_sparsity": 0.488,
                    "best_accuracy": 0.95,
                }
                for n in range(jobs)
            ],
        )
        ids = list(connection.execute(select(Job.id).order_by(Job.id)).scalars())
        if engine.dialect.name == "postgresql":
            connection.execute(text("ANALYZE"))
    engine.dispose()
    for job_id in ids:
        path = attempt_log(artifact_root, job_id, 1)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("epoch 1\n")
    return tokens, ids


# --- the server's process ------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of the process (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def idle_cpu(pid: int, seconds: float) -> float:
    """Percent of one core the server used while nothing was asked of it."""
    before, started = cpu_seconds(pid), time.perf_counter()
    await asyncio.sleep(seconds)
    return 100 * (cpu_seconds(pid) - before) / (time.perf_counter() - started)


# --- streams -----------------------------------------------------------------------


class Stream:
    """One open stream on its own socket; a task reads whatever arrives."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.arrived = asyncio.Event()
        self.closed_by_server = False
        self.task = asyncio.create_task(self._drain())

    @classmethod
    async def open(cls, base: str, path: str, token: str) -> Stream:
        host, port = base.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\n\r\n".encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        if head[9:12] != b"200":
            raise SystemExit(f"GET {path}: {head.decode(errors='replace')}")
        return cls(reader, writer)

    async def _drain(self) -> None:
        while await self.reader.read(65536):
            self.arrived.set()
        self.closed_by_server = True

    def close(self) -> None:
        self.task.cancel()
        self.writer.close()


async def open_streams(
    base: str, count: int, tokens: list[str], jobs: list[int]
) -> list[tuple[Stream, int | None]]:
    """``count`` streams, two per job in turn (its events, its followed log), the
    first 16 under the first user's token, the next 16 under the second's, ...;
    with each, the job of a followed log."""
    opened: list[tuple[Stream, int | None]] = []
    for first in range(0, count, 100):  # 100 connections at a time
        batch = []
        for n in range(first, min(count, first + 100)):
            index = (n // 2) % len(jobs)
            job_id, token = jobs[index], tokens[n // PER_USER]
            kind = f"/v1/jobs/{job_id}/events/stream" if n % 2 == 0 else None
            path = kind or f"/v1/jobs/{job_id}/logs?follow=true"
            batch.append((Stream.open(base, path, token), None if kind else job_id))
        streams = await asyncio.gather(*(opening for opening, _ in batch))
        opened.extend(zip(streams, [job for _, job in batch], strict=True))
    return opened


async def delivery(opened: list[tuple[Stream, int | None]], artifact_root: Path) -> list[float]:
    """Seconds from appending a line to a followed log to its arrival, for a few logs."""
    logs = [(stream, job_id) for stream, job_id in opened if job_id is not None]
    logs = logs[:: max(1, len(logs) // DELIVERY_PROBES)][:DELIVERY_PROBES]
    await asyncio.sleep(1.0)  # what the opening sent has arrived
    for stream, _ in logs:
        stream.arrived.clear()

    async def probe(stream: Stream, job_id: int) -> float:
        with attempt_log(artifact_root, job_id, 1).open("a") as handle:
            handle.write("epoch 2\n")
        started = time.perf_counter()
        await asyncio.wait_for(stream.arrived.wait(), 10)
        return time.perf_counter() - started

    return list(await asyncio.gather(*(probe(stream, job_id) for stream, job_id in logs)))


# --- the run -----------------------------------------------------------------------------


async def measure(
    backend: str, base: str, pid: int, tokens: list[str], jobs: list[int], args, root: Path
) -> list[Phase]:
    polls = [prepare("GET", f"/v1/jobs/{job_id}", tokens[0]) for job_id in jobs[:200]]

    def poll(n: int) -> bytes:
        return polls[n % len(polls)]

    cpu = await idle_cpu(pid, args.idle_seconds)
    latencies, seconds = await hammer(base, poll, args.clients, args.seconds)
    phases = [Phase(backend, "0", latencies, seconds, cpu, rss_mib(pid))]

    started = time.perf_counter()
    opened = await open_streams(base, args.streams, tokens, jobs)
    open_seconds = time.perf_counter() - started
    await asyncio.sleep(1.0)  # the watcher has read every followed job since
    cpu = await idle_cpu(pid, args.idle_seconds)
    latencies, seconds = await hammer(base, poll, args.clients, args.seconds)
    delivered = await delivery(opened, root)
    streams = f"{args.streams:,}"
    phases.append(
        Phase(backend, streams, latencies, seconds, cpu, rss_mib(pid), open_seconds, delivered)
    )
    gone = sum(stream.closed_by_server for stream, _ in opened)
    for stream, _ in opened:
        stream.close()
    if gone:
        raise SystemExit(f"{backend}: {gone} of {len(opened)} streams ended early")
    await asyncio.sleep(1.0)  # the server has seen them go
    cpu = await idle_cpu(pid, args.idle_seconds)
    latencies, seconds = await hammer(base, poll, args.clients, args.seconds)
    phases.append(Phase(backend, "0, again", latencies, seconds, cpu, rss_mib(pid)))
    return phases


def run_backend(backend: str, args: argparse.Namespace, folder: Path) -> list[Phase]:
    users = max(1, -(-args.streams // PER_USER))
    root = folder / "data" / "artifacts"
    with database(backend, folder) as url:
        tokens, jobs = fill(url, users, args.jobs, root)
        console.print(f"{backend}: {len(jobs)} running jobs of {users} users")
        env = {
            "SILO_DATABASE_URL": url,
            "SILO_DATA_DIR": str(folder / "data"),
            "SILO_DISPATCHER": "false",
        }
        with silo_serve_process(folder, env, ready_seconds=60) as (base, process):
            return asyncio.run(measure(backend, base, process.pid, tokens, jobs, args, root))


def report(phases: list[Phase], args: argparse.Namespace) -> None:
    title = (
        f"Status polls ({args.clients} clients, {args.seconds:.0f} s) and the idle server, "
        f"with 0 and {args.streams} open streams"
    )
    table = Table(title=title)
    columns = ("backend", "streams", "req/s", "p50 ms", "p99 ms", "idle CPU", "RSS MiB")
    for column in columns:
        table.add_column(column, justify="left" if column == "backend" else "right")
    table.add_column("vs 0 streams (req/s, p50, p99)")
    baseline: dict[str, Phase] = {}
    for phase in phases:
        base = baseline.setdefault(phase.backend, phase)
        ratios = ""
        if phase is not base:
            ratios = ", ".join(
                f"{now / then:.2f}x"
                for now, then in (
                    (phase.rate, base.rate),
                    (phase.percentile(0.5), base.percentile(0.5)),
                    (phase.percentile(0.99), base.percentile(0.99)),
                )
            )
        table.add_row(
            phase.backend,
            phase.streams,
            f"{phase.rate:,.0f}",
            f"{phase.percentile(0.5):.1f}",
            f"{phase.percentile(0.99):.1f}",
            f"{phase.idle_cpu:.1f}%",
            f"{phase.rss_mib:.0f}",
            ratios,
        )
    console.print(table)
    for phase in phases:
        if phase.delivered:
            console.print(
                f"{phase.backend}: {phase.streams} streams opened in {phase.open_seconds:.1f} s;"
                f" a line appended to a followed log arrived in p50"
                f" {statistics.median(phase.delivered) * 1000:.0f} ms,"
                f" max {max(phase.delivered) * 1000:.0f} ms ({len(phase.delivered)} logs)"
            )


def raise_open_files(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        wanted = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        if wanted < needed:
            raise SystemExit(f"{needed} open files needed, the hard limit is {hard}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--idle-seconds", type=float, default=5.0)
    args = parser.parse_args()
    # This process and the server (which inherits the limit) each hold a socket
    # per stream.
    raise_open_files(args.streams + 1024)
    phases: list[Phase] = []
    for backend in args.backends.split(","):
        folder = Path(tempfile.mkdtemp(prefix=f"silo-bench-streams-{backend}-"))
        try:
            phases.extend(run_backend(backend, args, folder))
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    report(phases, args)


if __name__ == "__main__":
    main()
