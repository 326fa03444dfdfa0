"""bench/team_day.py's picture: each user's GPUs held over time, one panel per mode.

A job is drawn as held only inside its runs (bench/team_day_metrics.py's
segments); a preempted run's end is marked with a cross at the foot of the panel.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")  # no display: a file only
import matplotlib.pyplot as plt
from team_day_jobs import USERS
from team_day_metrics import occupancy, segments

if TYPE_CHECKING:
    from team_day_report import ModeResult

TITLES = {
    "ranked": "this dispatcher (priority + aging, fair share, quota)",
    "preempt": "this dispatcher with SILO_PREEMPTION=fair-share (x: a run preempted)",
    "fifo": "SILO_DISPATCH_ORDER=fifo (oldest first, quota kept)",
    "ray": "Ray alone (actors straight to Ray)",
}


def plot(results: list[ModeResult], gpus: float, quota: float | None, path: Path) -> None:
    users = [user.name for user in USERS]
    figure, axes = plt.subplots(len(results), 1, figsize=(10, 2.8 * len(results)), sharex=True)
    axes = [axes] if len(results) == 1 else list(axes)
    for ax, result in zip(axes, results, strict=True):
        times, series = occupancy(result.jobs, users, result.until)
        # Grey behind: the moments when at least one job waits.
        for segment in segments(result.jobs, result.until):
            if segment.waiting:
                ax.axvspan(segment.begin, segment.end, color="0.92", lw=0, zorder=0)
        labels = [f"{user.name} (p{user.priority})" for user in USERS]
        ax.stackplot(times, *series, step="post", labels=labels, zorder=2)
        ax.axhline(gpus, color="black", lw=1, ls="--", zorder=3)
        preempted = [end for job in result.jobs for end in job.preempted_ends]
        if preempted:
            ax.plot(preempted, [0.05 * gpus] * len(preempted), "x", color="black", ms=5, zorder=4)
        if quota is not None:
            ax.axhline(quota, color="red", lw=0.8, ls=":", zorder=3)
        ax.set_ylim(0, gpus * 1.4)  # room for the legend above the capacity line
        ax.set_xlim(0, max(r.until for r in results))
        ax.set_ylabel("GPUs held")
        ax.set_title(TITLES.get(result.mode, result.mode), fontsize=10, loc="left")
    axes[0].legend(loc="upper right", fontsize=8, ncol=len(users))
    axes[-1].set_xlabel(
        "seconds since the first arrival (grey: work waiting; dashed: capacity; dotted: quota)"
    )
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
