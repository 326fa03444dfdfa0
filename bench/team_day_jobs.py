"""bench/team_day.py's workload: the team's users, their jobs, and the stand-in job.

The workload is drawn from ``--seed``: the same users, arrival times, GPU
fractions and durations for every mode of a run.

The stand-in job is a Ray actor that holds its CPUs and GPUs for the job's
duration (it sleeps) and then ends, as a training job of that length would
from the scheduler's point of view. Like a training job it survives being
killed (the dispatcher preempts by killing the attempt's actor): it
checkpoints after every ``CHECKPOINT_SECONDS`` of work, and a later attempt
of the same job (same workload key) resumes from what the earlier ones
checkpointed, holding its resources only for the work left; what a killed
run did since its last checkpoint is lost. Its file is a record of runs
(attempts), each with its start, its end (kept current by a heartbeat every
``HEARTBEAT_SECONDS`` while it runs, so a killed run's end is known within
that) and the work it checkpointed, and whether the job finished; a job never
killed has one run, from its start to its end. The times are its clock (when
its process began running, when it last beat or ended), so all modes measure
the same thing. When it was launched by the dispatcher, it reports
``succeeded`` to the API with its attempt's token, as a worker does. Like the
service's actor it tells the dispatcher where it runs (``devices()``: node
and GPU cards, for the dispatcher's card model). This module is imported by
the Ray workers, so it imports nothing heavy.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
import uuid
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
CHECKPOINT_SECONDS = 5.0  # a stand-in checkpoints after every 5 s of work
HEARTBEAT_SECONDS = 0.25  # and writes its run's end this often


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


@dataclass(frozen=True)
class RunTimes:
    """One run (attempt) of a job, on the wall clock."""

    start: float
    end: float  # its last heartbeat, or when it finished
    work: float  # seconds of work it checkpointed (credited to it)
    done: bool  # it finished the job's work
    attempt: int | None  # the service's attempt number; None in ray mode


@dataclass(frozen=True)
class JobTimes:
    runs: tuple[RunTimes, ...]  # in start order

    @property
    def work(self) -> float:
        """Seconds of work checkpointed so far, all runs."""
        return sum(run.work for run in self.runs)

    @property
    def done(self) -> bool:
        """Some run finished the job's work."""
        return any(run.done for run in self.runs)


def read_times(folder: str | Path, key: int) -> JobTimes | None:
    """The job's runs so far, or None if it has not started."""
    path = times_file(folder, key)
    if not path.exists():
        return None
    runs = [
        RunTimes(r["start"], r["end"], r["work"], r["done"], r["attempt"])
        for r in json.loads(path.read_text())["runs"]
    ]
    return JobTimes(tuple(sorted(runs, key=lambda run: run.start)))


def write_run(folder: str | Path, key: int, run_id: str, run: dict) -> None:
    """Put this run's entry (start, end, work, done, attempt) in the job's file,
    keeping the other runs'. Read, merge, replace: should a killed run's last
    write land after a later run's, the later run puts itself back at its next
    heartbeat."""
    path = times_file(folder, key)
    runs = json.loads(path.read_text())["runs"] if path.exists() else []
    runs = [r for r in runs if r["id"] != run_id] + [{"id": run_id, **run}]
    times = {  # the job's work so far and whether it finished, for a reader's eye
        "runs": runs,
        "work": sum(r["work"] for r in runs),
        "done": any(r["done"] for r in runs),
    }
    partial = path.with_suffix(f".{run_id}.tmp")  # one per writer
    partial.write_text(json.dumps(times))
    os.replace(partial, path)  # a reader never sees half a file


class StandIn:
    """Holds its resources for the work left of ``seconds``, checkpointing as it
    goes, then reports and ends; a later attempt of the same job resumes from
    the work its earlier attempts checkpointed. Runs as ``StandInJob``."""

    def __init__(self, folder: str, key: int, attempt: int | None = None) -> None:
        self.folder, self.key, self.attempt = folder, key, attempt
        self.run_id = uuid.uuid4().hex
        self.start = time.time()  # the process runs: this run has started
        before = read_times(folder, key)
        self.resumed = before.work if before is not None else 0.0  # the last checkpoint
        self._write(self.start, 0.0, done=False)

    def _write(self, end: float, work: float, done: bool) -> None:
        run = {"start": self.start, "end": end, "work": work, "done": done}
        write_run(self.folder, self.key, self.run_id, {**run, "attempt": self.attempt})

    def run(self, seconds: float, report: dict | None = None) -> None:
        left = max(0.0, seconds - self.resumed)
        finish = self.start + left
        while (now := time.time()) < finish:  # the heartbeat: this run's end, kept current
            checkpoints = math.floor((now - self.start) / CHECKPOINT_SECONDS)
            self._write(now, min(checkpoints * CHECKPOINT_SECONDS, left), done=False)
            time.sleep(min(HEARTBEAT_SECONDS, finish - now))
        self._write(time.time(), left, done=True)
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


# Ray's type stubs know no actor options on ray.remote. max_concurrency 2, as
# the service's own actor: devices() answers the dispatcher while run() sleeps.
StandInJob = ray.remote(max_restarts=0, max_task_retries=0, max_concurrency=2)(StandIn)  # type: ignore[call-overload]
