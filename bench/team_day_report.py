"""bench/team_day.py's report: one mode's outcome, its figures, the tables.

The measures themselves are bench/team_day_metrics.py's; this turns the
stand-ins' files into job records (``job_record``), and a mode's records into
the figures the tables show and ``--json`` writes.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from rich.console import Console
from rich.table import Table
from team_day_jobs import HEARTBEAT_SECONDS, USERS, JobTimes, Work
from team_day_metrics import (
    JobRecord,
    contended_seconds,
    fairness,
    percentile,
    preemptions,
    quota_violations,
    segments,
    user_priorities,
    utilisation_while_waiting,
    waits_by_priority,
)

console = Console(width=150)
# A run whose last heartbeat is this close to the mode's end ran until then: the
# mode stopped it (its Ray head went), not a preemption. (A run preempted that
# close to the end counts as running to it: a second's wait, one preemption, lost.)
STOPPED_WITH_THE_MODE = 4 * HEARTBEAT_SECONDS


def job_record(
    job: Work, times: JobTimes | None, origin: float, submit: float, until: float
) -> JobRecord:
    """The job's record from its stand-in's file (wall clock; ``origin`` is the
    mode's), cut at ``until``: a run still going then has no end, and a run
    that began later does not count."""
    kept = [run for run in (times.runs if times else ()) if run.start - origin <= until]
    runs: list[tuple[float, float | None]] = []
    finished, work = False, 0.0
    for index, run in enumerate(kept):
        start, end = run.start - origin, run.end - origin
        last = index == len(kept) - 1
        finishing = last and times is not None and times.done and len(kept) == len(times.runs)
        if end > until or (last and not finishing and end > until - STOPPED_WITH_THE_MODE):
            runs.append((start, None))
            continue
        runs.append((start, end))
        work += run.work
        finished = finishing
    return JobRecord(job.user, job.priority, job.gpus, submit, tuple(runs), finished, work)


@dataclass
class ModeResult:
    mode: str
    jobs: list[JobRecord]
    until: float  # seconds from the first arrival to the mode's end
    wall: float
    ticks: list[float] = field(default_factory=list)  # dispatcher tick seconds
    launches: int = 0
    # The dispatcher's launch (the attempt's started_at) to the actor running, seconds:
    # Ray placing the actor and starting its process.
    startup: list[float] = field(default_factory=list)


def aging_bound(work: list[Work], aging_seconds: float) -> float:
    priorities = [job.priority for job in work]
    spread = max(priorities) - min(priorities) + 1
    return spread * aging_seconds + max(job.seconds for job in work)


def summary(result: ModeResult, args: argparse.Namespace, bound: float) -> dict:
    """The mode's figures, as the tables show them and --json writes them."""
    cut = segments(result.jobs, result.until)
    fair = fairness(cut, args.gpus, args.quota)
    by_priority = fairness(cut, args.gpus, args.quota, user_priorities(result.jobs))
    quota = quota_violations(cut, args.quota)
    waits = waits_by_priority(result.jobs, result.until)
    preempted = preemptions(result.jobs)
    held = {
        user.name: sum(j.gpus * j.held(result.until) for j in result.jobs if j.user == user.name)
        for user in USERS
    }
    total_held = sum(held.values()) or 1.0
    fair_total = sum(fair.fair.values()) or 1.0
    tick_seconds = sum(result.ticks)
    return {
        "mode": result.mode,
        "wall_seconds": round(result.wall, 1),
        "run_seconds": round(result.until, 1),
        "jobs": len(result.jobs),
        "finished": sum(j.finished for j in result.jobs),
        "contended_seconds": round(contended_seconds(cut), 1),
        "utilisation": utilisation_while_waiting(cut, args.gpus),
        "utilisation_under_quota": utilisation_while_waiting(cut, args.gpus, args.quota),
        "jain": fair.jain,
        "jain_by_priority": by_priority.jain,
        "preemptions": preempted.runs,
        "preempted_jobs": preempted.jobs,
        "preemption_lost_gpu_seconds": round(preempted.lost_gpu_seconds, 1),
        "users": {
            user.name: {
                "gpu_seconds": round(held[user.name], 1),
                "share": held[user.name] / total_held,
                "fair_share": fair.fair.get(user.name, 0.0) / fair_total,
                "received_over_fair": fair.ratio(user.name),
                "received_over_fair_by_priority": by_priority.ratio(user.name),
            }
            for user in USERS
        },
        "quota_episodes": quota.episodes,
        "quota_over_gpu_seconds": round(quota.over_gpu_seconds, 1),
        "most_held": quota.most_held,
        "waits": {
            str(priority): {
                "n": w.count,
                "not_started": w.not_started,
                "p50": w.p50,
                "p95": w.p95,
                "max": w.max,
                "preempted": w.preempted,
                "again_seconds": w.again_seconds,
                "again_max": w.again_max,
            }
            for priority, w in waits.items()
        },
        "max_wait": max(w.max for w in waits.values()),
        "aging_bound": bound,
        "ticks": len(result.ticks),
        "tick_p50_ms": percentile(result.ticks, 0.5) * 1000 if result.ticks else None,
        "tick_p95_ms": percentile(result.ticks, 0.95) * 1000 if result.ticks else None,
        "launches": result.launches,
        "startup_p50": percentile(result.startup, 0.5) if result.startup else None,
        "startup_p95": percentile(result.startup, 0.95) if result.startup else None,
        "launches_per_tick_second": result.launches / tick_seconds if tick_seconds else None,
    }


def number(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def show(figures: list[dict], args: argparse.Namespace) -> None:
    modes = [f["mode"] for f in figures]
    table = Table(
        title=f"A team's day: {args.gpus} declared GPUs, quota {args.quota:g}, "
        f"seed {args.seed}, {figures[0]['jobs']} jobs"
    )
    table.add_column("measure")
    for mode in modes:
        table.add_column(mode, justify="right")
    table.add_column("target")

    def row(name: str, values: list[str], target: str = "") -> None:
        table.add_row(name, *values, target)

    row("jobs finished", [f"{f['finished']}/{f['jobs']}" for f in figures])
    row("seconds with work waiting", [number(f["contended_seconds"], 0) for f in figures])
    row("GPU utilisation while work waits", [number(f["utilisation"]) for f in figures], ">= 0.90")
    row(
        "  while work within the quota waits",
        [number(f["utilisation_under_quota"]) for f in figures],
        "",
    )
    row("Jain's index (users with work waiting)", [number(f["jain"]) for f in figures], ">= 0.95")
    row(
        "Jain's index, fair share by priority",
        [number(f["jain_by_priority"]) for f in figures],
        ">= 0.95",
    )
    row(
        "preemptions (jobs; GPU-s lost)",
        [
            f"{f['preemptions']} ({f['preempted_jobs']}; {f['preemption_lost_gpu_seconds']:g})"
            for f in figures
        ],
    )
    row(
        "quota violations (GPU-s above)",
        [f"{f['quota_episodes']} ({f['quota_over_gpu_seconds']:g})" for f in figures],
        "0",
    )
    row("most GPUs one user held", [f"{f['most_held']:g}" for f in figures])
    row(
        "longest wait, s (aging bound)",
        [f"{f['max_wait']:.0f} ({f['aging_bound']:.0f})" for f in figures],
        "<= bound",
    )
    row("dispatcher ticks", [str(f["ticks"]) if f["ticks"] else "-" for f in figures])
    row(
        "tick p50 / p95, ms",
        [
            f"{number(f['tick_p50_ms'], 1)} / {number(f['tick_p95_ms'], 1)}" if f["ticks"] else "-"
            for f in figures
        ],
    )
    row(
        "launch -> actor running, s p50 / p95",
        [
            f"{number(f['startup_p50'], 1)} / {number(f['startup_p95'], 1)}"
            if f["startup_p50"] is not None
            else "-"
            for f in figures
        ],
    )
    row("launches per tick-second", [number(f["launches_per_tick_second"], 0) for f in figures])
    console.print(table)

    waits = Table(
        title="Wait, submit to first start, seconds: p50 / p95 / max (jobs; not started); "
        "after preemptions: all / one job's most (jobs preempted)"
    )
    waits.add_column("priority")
    for mode in modes:
        waits.add_column(mode, justify="right")
    for priority in figures[0]["waits"]:
        cells = []
        for f in figures:
            w = f["waits"][priority]
            cells.append(
                f"{w['p50']:.0f} / {w['p95']:.0f} / {w['max']:.0f} ({w['n']}; {w['not_started']})"
                f"; {w['again_seconds']:.0f} / {w['again_max']:.0f} ({w['preempted']})"
            )
        waits.add_row(priority, *cells)
    console.print(waits)

    users = Table(
        title="GPU-seconds per user: share of all / fair share / received over fair "
        "(over fair share by priority)"
    )
    users.add_column("user")
    for mode in modes:
        users.add_column(mode, justify="right")
    for user in USERS:
        cells = []
        for f in figures:
            u = f["users"][user.name]
            cells.append(
                f"{u['share']:.2f} / {u['fair_share']:.2f} / {number(u['received_over_fair'])}"
                f" ({number(u['received_over_fair_by_priority'])})"
            )
        users.add_row(f"{user.name} (priority {user.priority})", *cells)
    console.print(users)
