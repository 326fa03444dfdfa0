"""bench/team_day.py's workload: the team's users, their jobs, and the stand-in job.

The workload is drawn from ``--seed``: the same users, arrival times, GPU
fractions and durations for every mode of a run.

The stand-in job is a Ray actor that holds its CPUs and GPUs for the job's
duration (it sleeps) and then ends, as a training job of that length would
from the scheduler's point of view. It writes its own start and end times
(its clock, when its process began running and when it ended) to a file, so
all three modes measure the same thing, and, when it was launched by the
dispatcher, it reports ``succeeded`` to the API with its attempt's token, as
a worker does. Like the service's actor it tells the dispatcher where it runs
(``devices()``: node and GPU cards, for the dispatcher's card model). This
module is imported by the Ray workers, so it imports nothing heavy.
"""

from __future__ import annotations

import json
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import ray


@dataclass(frozen=True)
class User:
    name: str
    priority: int
    jobs: int  # at the default --minutes 3; scaled with --minutes
    burst: bool = False  # all at once (within BURST_SECONDS), early in the day


@dataclass(frozen=True)
class Work:
    key: int  # the job's spec seed: unique, so the dispatcher maps a launch back to it
    user: str
    priority: int
    gpus: float
    seconds: float
    arrival: float  # seconds after the run's start


# Bob has urgent work (priority 2), dave batch work (-1); carol submits a burst
# that alone would fill the cluster, which the quota is there to bound.
USERS = (
    User("alice", 0, 12),
    User("bob", 2, 6),
    User("carol", 0, 16, burst=True),
    User("dave", -1, 10),
)
GPU_SIZES = (0.25, 0.5, 1.0)
DURATIONS = (12.0, 25.0, 50.0)  # seconds: short, medium and long jobs
BURST_AT, BURST_SECONDS = 0.15, 5.0  # the burst starts 15% into the arrivals


def workload(seed: int, minutes: float) -> list[Work]:
    """Every user's jobs with their arrival times, in arrival order."""
    draw = random.Random(seed)
    window = minutes * 60
    jobs = []
    for user in USERS:
        count = max(1, round(user.jobs * minutes / 3))
        for _ in range(count):
            if user.burst:
                arrival = BURST_AT * window + draw.uniform(0, BURST_SECONDS)
            else:
                arrival = draw.uniform(0, window)
            gpus, seconds = draw.choice(GPU_SIZES), draw.choice(DURATIONS)
            jobs.append(Work(0, user.name, user.priority, gpus, seconds, arrival))
    jobs.sort(key=lambda work: work.arrival)
    return [
        Work(key, w.user, w.priority, w.gpus, w.seconds, w.arrival)
        for key, w in enumerate(jobs, start=1)
    ]


def times_file(folder: str | Path, key: int) -> Path:
    return Path(folder) / f"{key}.json"


def read_times(folder: str | Path, key: int) -> tuple[float, float | None] | None:
    """The job's (start, end) on the wall clock, or None if it has not started."""
    path = times_file(folder, key)
    if not path.exists():
        return None
    times = json.loads(path.read_text())
    return times["start"], times.get("end")


def _write_times(folder: str, key: int, times: dict[str, float]) -> None:
    path = times_file(folder, key)
    partial = path.with_suffix(".tmp")
    partial.write_text(json.dumps(times))
    os.replace(partial, path)  # a reader never sees half a file


# Ray's type stubs know no actor options on ray.remote. max_concurrency 2, as
# the service's own actor: devices() answers the dispatcher while run() sleeps.
@ray.remote(max_restarts=0, max_task_retries=0, max_concurrency=2)  # type: ignore[call-overload]
class StandInJob:
    """Holds its resources for ``seconds``, then reports and ends."""

    def __init__(self, folder: str, key: int) -> None:
        self.folder, self.key = folder, key
        self.start = time.time()  # the process runs: the job has started
        _write_times(folder, key, {"start": self.start})

    def run(self, seconds: float, report: dict | None = None) -> None:
        time.sleep(max(0.0, self.start + seconds - time.time()))
        _write_times(self.folder, self.key, {"start": self.start, "end": time.time()})
        if report is not None:  # the attempt's final status, as a worker reports it
            httpx.post(
                f"{report['api_url']}/v1/jobs/{report['job_id']}/attempts/{report['attempt']}"
                "/status",
                json={"status": "succeeded"},
                headers={"Authorization": f"Bearer {report['token']}"},
                timeout=30,
            ).raise_for_status()
        ray.actor.exit_actor()

    def devices(self) -> dict:
        """Where it runs, as the service's actor says it (the dispatcher asks)."""
        from workers.ray_actor import devices_here

        return devices_here()
