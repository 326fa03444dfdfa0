"""Watches: what open watchers of running jobs cost while nothing changes, and how
soon a change reaches them.

Run as::

    python bench/watches.py [--backends sqlite,postgresql] [--watchers 500]
        [--idle-seconds 10] [--changes 50]

For each backend: a fresh database with ``--watchers`` running jobs (claimed
the way the dispatcher claims them) and ``silo serve`` (one process, no
dispatcher). Then

* ``idle``: the server's CPU time (user + system, from /proc) over
  ``--idle-seconds`` with no client at all, then over the same time with
  ``--watchers`` connections each holding ``GET /v1/jobs/{id}?wait=60s`` with
  the job's current ETag (a watch that answers when the job changes);
* ``change -> watcher``: ``--changes`` times, one watched job is cancelled
  through the API (POST .../cancel) and the time from sending the cancel to
  its watcher's answer (200, the job now cancelling) is taken; the watcher
  then watches again with the new tag. On PostgreSQL the same is done with
  the change committed by this process straight to the database (a
  dispatcher's or another API process's commit), which reaches the server
  through NOTIFY.

Prints the CPU share of one core in each state and the change latencies
(p50, p99, max), in one table.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from api_load import (
    DIGITS_SPEC,
    RawConnection,
    current_tags,
    database,
    fill,
    prepare,
    start_some,
)
from rich.console import Console
from rich.table import Table
from serve import silo_serve_process

from server.db.models import Job
from server.db.session import make_engine, make_session_factory

WATCH = "60s"
console = Console(width=140)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_share(pid: int, seconds: float) -> float:
    """The share of one core process ``pid`` used over the next ``seconds``."""
    before = cpu_seconds(pid)
    time.sleep(seconds)
    return (cpu_seconds(pid) - before) / seconds


class Watcher:
    """One connection watching one job: re-arms with the new tag after each answer."""

    def __init__(self, connection: RawConnection, job_id: int, tag: str, token: str) -> None:
        self.connection, self.job_id, self.tag, self.token = connection, job_id, tag, token
        self.answered: asyncio.Queue[float] = asyncio.Queue()

    async def run(self) -> None:
        path = f"/v1/jobs/{self.job_id}?wait={WATCH}"
        while True:
            raw = prepare("GET", path, self.token, if_none_match=self.tag)
            self.connection.writer.write(raw)
            head = await self.connection.reader.readuntil(b"\r\n\r\n")
            arrived = time.perf_counter()
            status, length = int(head[9:12]), 0
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.lower() == b"content-length":
                    length = int(value)
                elif name.lower() == b"etag":
                    self.tag = value.strip().decode()
            await self.connection.reader.readexactly(length)
            if status == 200:
                self.answered.put_nowait(arrived)


async def watch_phase(
    base: str, token: str, url: str, jobs: list[int], pid: int, args: argparse.Namespace
) -> dict[str, object]:
    tags = current_tags(base, token, jobs)
    watchers = [
        Watcher(await RawConnection.open(base), job_id, tag, token)
        for job_id, tag in zip(jobs, tags, strict=True)
    ]
    tasks = [asyncio.create_task(w.run()) for w in watchers]
    await asyncio.sleep(2.0)  # every watch is in place
    watching = await asyncio.to_thread(cpu_share, pid, args.idle_seconds)
    latencies: dict[str, list[float]] = {"api": [], "database": []}
    rng = random.Random(0)
    changed = rng.sample(range(len(watchers)), min(len(watchers), 2 * args.changes))
    ways = ["api"] * args.changes
    if url.startswith("postgresql"):
        ways += ["database"] * args.changes
    engine = make_engine(url)
    sessions = make_session_factory(engine)
    async with httpx.AsyncClient(
        base_url=base, headers={"Authorization": f"Bearer {token}"}
    ) as client:
        for n, way in enumerate(ways):
            watcher = watchers[changed[n % len(changed)]]
            sent = time.perf_counter()
            if way == "api":
                response = await client.post(f"/v1/jobs/{watcher.job_id}/cancel")
                response.raise_for_status()
            else:
                await asyncio.to_thread(bump_progress, sessions, watcher.job_id)
            arrived = await asyncio.wait_for(watcher.answered.get(), 30)
            latencies[way].append(arrived - sent)
            await asyncio.sleep(0.05)
    engine.dispose()
    for task in tasks:
        task.cancel()
    for watcher in watchers:
        watcher.connection.close()
    return {"watching": watching, **latencies}


def bump_progress(sessions, job_id: int) -> None:
    with sessions.begin() as session:
        job = session.get_one(Job, job_id)
        job.progress_epoch = (job.progress_epoch or 0) + 1


def run_backend(backend: str, args: argparse.Namespace) -> dict[str, object]:
    folder = Path(tempfile.mkdtemp(prefix=f"silo-watch-{backend}-"))
    try:
        with database(backend, folder) as url:
            token = fill(url, 0)
            env = {
                "SILO_DATABASE_URL": url,
                "SILO_DATA_DIR": str(folder / "data"),
                "SILO_DISPATCHER": "false",
            }
            with silo_serve_process(folder, env, ready_seconds=60) as (base, process):
                with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}) as c:
                    for seed in range(args.watchers):
                        body = {"spec": {**DIGITS_SPEC, "seed": seed}}
                        c.post("/v1/jobs", json=body).raise_for_status()
                running, _ = start_some(url, args.watchers)
                idle = cpu_share(process.pid, args.idle_seconds)
                result = asyncio.run(watch_phase(base, token, url, running, process.pid, args))
                return {"backend": backend, "idle": idle, **result}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def report(results: list[dict[str, object]], args: argparse.Namespace) -> None:
    table = Table(title=f"{args.watchers} watchers of running jobs, one API process")
    for column in ("backend", "CPU idle", f"CPU, {args.watchers} watching", "change by"):
        table.add_column(column)
    for column in ("changes", "p50 ms", "p99 ms", "max ms"):
        table.add_column(column, justify="right")
    for r in results:
        for way in ("api", "database"):
            latencies = sorted(r[way])  # type: ignore[call-overload]
            if not latencies:
                continue
            p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
            table.add_row(
                str(r["backend"]),
                f"{r['idle']:.1%}",
                f"{r['watching']:.1%}",
                "API cancel" if way == "api" else "commit elsewhere (NOTIFY)",
                str(len(latencies)),
                f"{statistics.median(latencies) * 1000:.1f}",
                f"{p99 * 1000:.1f}",
                f"{latencies[-1] * 1000:.1f}",
            )
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--watchers", type=int, default=500)
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    parser.add_argument("--changes", type=int, default=50)
    args = parser.parse_args()
    report([run_backend(backend, args) for backend in args.backends.split(",")], args)


if __name__ == "__main__":
    main()
