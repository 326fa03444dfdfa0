"""Dispatch latency on a warm local Ray, and how many small jobs run side by side.

Run as::

    python bench/dispatch.py [--latency-jobs 20] [--batch 8] [--concurrency 1,2,4,8]

It starts ``silo serve`` (API, dispatcher and a local Ray head, the embedded
default with SQLite) in a temporary data folder and warms it with one job.

* Latency: ``--latency-jobs`` tiny jobs (digits, MLP, one epoch) submitted one
  after another, each when the previous has finished; the latency is the
  job's ``started_at - created_at`` as the server recorded them, from the
  POST until the dispatcher has claimed the job and asked Ray for its actor
  (the actor's own start-up follows, shown as "first event").
* Cancel: jobs of two epoch lengths (digits MLP, resnet20 on synthetic
  images) are cancelled after their third epoch; the time from the POST to
  the status ``cancelled``, also in epochs of that job.
* Throughput: for each level k of ``--concurrency``, ``--batch`` copies of the
  digits SILO preset are submitted at once, each asking for 2/k CPUs of the
  2-CPU head, so k run side by side; the table gives the wall time until all
  have finished and jobs per minute, against k = 1.

The Ray head it starts is stopped at the end (its processes only; for
timings, run it where nothing else is busy).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx
import yaml
from rich.console import Console
from rich.table import Table
from serve import silo_serve

ROOT = Path(__file__).parents[1]
PRESET = yaml.safe_load((ROOT / "silo_core" / "presets" / "digits-silo.yaml").read_text())
TINY = {
    **PRESET,
    "pruning": {"method": "global_magnitude", "fraction": 0.2, "cycles": 1},
    "training": {"epochs_per_cycle": 1, "batch_size": 256, "dense": {"epochs": 1}},
    "device": "cpu",
}
console = Console(width=120)


def client_for(folder: Path, base: str) -> httpx.Client:
    token = (folder / "admin-token").read_text().strip()
    return httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def submit(client: httpx.Client, spec: dict, cpus: float = 1.0) -> int:
    response = client.post("/v1/jobs", json={"spec": spec, "resources": {"cpus": cpus}})
    response.raise_for_status()
    return response.json()["id"]


def wait_all(client: httpx.Client, ids: list[int], timeout: float = 1800) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        jobs = [client.get(f"/v1/jobs/{job_id}").json() for job_id in ids]
        if all(job["status"] in ("succeeded", "failed", "cancelled") for job in jobs):
            failed = [job for job in jobs if job["status"] != "succeeded"]
            if failed:
                raise SystemExit(f"job {failed[0]['id']}: {failed[0]['error_message']}")
            return jobs
        if time.monotonic() > deadline:
            raise SystemExit("jobs did not finish in time")
        time.sleep(0.1)


def seconds_between(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def measure_latency(client: httpx.Client, count: int) -> tuple[list[float], list[float]]:
    claimed, first_event = [], []
    for n in range(count):
        job_id = submit(client, {**TINY, "seed": n})
        (job,) = wait_all(client, [job_id])
        claimed.append(seconds_between(job["created_at"], job["started_at"]))
        events = client.get(f"/v1/jobs/{job_id}/events", params={"limit": 1}).json()["items"]
        first_event.append(seconds_between(job["created_at"], events[0]["created_at"]))
    return claimed, first_event


def measure_throughput(client: httpx.Client, batch: int, levels: list[int]) -> list[tuple]:
    rows = []
    for level in levels:
        started = time.perf_counter()
        ids = [submit(client, {**PRESET, "seed": n}, cpus=2 / level) for n in range(batch)]
        wait_all(client, ids)
        rows.append((level, 2 / level, time.perf_counter() - started))
    return rows


CANCEL_SPECS = {
    "digits mlp": {**PRESET, "device": "cpu"},
    "synthetic resnet20": {
        **PRESET,
        "model": {"name": "resnet20"},
        "dataset": {"name": "synthetic", "options": {"num_train": 1024, "num_test": 256}},
        "device": "cpu",
    },
}


def measure_cancel(client: httpx.Client, runs: int) -> list[tuple[str, float, float]]:
    """Per spec: median seconds from POST cancel to `cancelled`, and the median epoch."""
    rows = []
    for label, spec in CANCEL_SPECS.items():
        latencies, epochs = [], []
        for _ in range(runs):
            job_id = submit(client, spec)
            deadline = time.monotonic() + 300
            while (client.get(f"/v1/jobs/{job_id}").json()["progress"]["epoch"] or 0) < 3:
                if time.monotonic() > deadline:
                    raise SystemExit(f"{label}: job {job_id} made no progress")
                time.sleep(0.05)
            asked = time.perf_counter()
            client.post(f"/v1/jobs/{job_id}/cancel").raise_for_status()
            while client.get(f"/v1/jobs/{job_id}").json()["status"] != "cancelled":
                time.sleep(0.01)
            latencies.append(time.perf_counter() - asked)
            events = client.get(f"/v1/jobs/{job_id}/events", params={"limit": 1000}).json()
            epochs.extend(event["seconds"] for event in events["items"])
        rows.append((label, statistics.median(latencies), statistics.median(epochs)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency-jobs", type=int, default=20)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--concurrency", default="1,2,4,8")
    parser.add_argument("--cancel-runs", type=int, default=5)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="silo-bench-dispatch-"))
    env = {"SILO_DATA_DIR": str(folder), "SILO_RAY_NUM_CPUS": "2"}
    try:
        with silo_serve(folder, env) as base, client_for(folder, base) as client:
            wait_all(client, [submit(client, TINY)])  # warm: Ray workers, imports
            claimed, first_event = measure_latency(client, args.latency_jobs)
            throughput = measure_throughput(
                client, args.batch, [int(k) for k in args.concurrency.split(",")]
            )
            cancels = measure_cancel(client, args.cancel_runs)
    finally:
        subprocess.run(
            [str(Path(sys.executable).with_name("ray")), "stop", "--force"],
            capture_output=True,
            check=False,
        )
        shutil.rmtree(folder, ignore_errors=True)

    table = Table(title=f"Dispatch latency, {args.latency_jobs} jobs on a warm local Ray")
    for column in ("from submit to", "median s", "p90 s", "max s"):
        table.add_column(column, justify="left" if column == "from submit to" else "right")
    for name, values in (("claimed, actor asked for", claimed), ("first epoch event", first_event)):
        ordered = sorted(values)
        table.add_row(
            name,
            f"{statistics.median(ordered):.3f}",
            f"{ordered[int(0.9 * (len(ordered) - 1))]:.3f}",
            f"{ordered[-1]:.3f}",
        )
    console.print(table)
    table = Table(title=f"{args.batch} digits SILO jobs at once, 2-CPU local Ray")
    for column in ("side by side", "CPUs per job", "wall s", "jobs/min", "vs 1"):
        table.add_column(column, justify="right")
    base = throughput[0][2]
    for level, cpus, wall in throughput:
        table.add_row(
            str(level),
            f"{cpus:g}",
            f"{wall:.1f}",
            f"{args.batch * 60 / wall:.1f}",
            f"{base / wall:.2f}x",
        )
    console.print(table)
    table = Table(title=f"Cancel latency, median of {args.cancel_runs} jobs each")
    for column in ("job", "POST cancel -> cancelled s", "epoch s", "in epochs"):
        table.add_column(column, justify="left" if column == "job" else "right")
    for label, latency, epoch in cancels:
        table.add_row(label, f"{latency:.2f}", f"{epoch:.2f}", f"{latency / epoch:.2f}")
    console.print(table)


if __name__ == "__main__":
    main()
