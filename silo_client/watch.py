"""Live progress of a job or a study, for ``silo watch`` and ``--wait``."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskProgressColumn,
    TextColumn,
)

from silo_client.client import WATCH_SECONDS, SiloClient, sleep_rest_of
from silo_contract.jobs import JobOut
from silo_contract.status import is_terminal
from silo_contract.studies import MemberOut, StudyOut


def _progress(
    console: Console, done: ProgressColumn | None = None, label_width: int = 12
) -> Progress:
    """Bars with a label, how much is done (``done``; default n/m) and a status text."""
    return Progress(
        TextColumn(f"{{task.description:>{label_width}}}"),
        BarColumn(),
        done or MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        console=console,
    )


def watch_job(client: SiloClient, job_id: int, console: Console, poll: float = 1.0) -> JobOut:
    """Two bars, cycles of the job and epochs of the current cycle, until the job ends;
    the job as it ended."""
    with _progress(console) as progress:
        cycles = progress.add_task("cycles", total=None, status="")
        epochs = progress.add_task("epochs", total=None, status="")
        for job, events in client.follow(job_id, poll=poll):
            planned = job.progress.cycles
            # Cycle 0 is the dense training, so a job plans cycles + 1 of them.
            total = planned + 1 if planned is not None else None
            progress.update(cycles, total=total, status=job.status)
            for event in events:
                progress.update(
                    epochs,
                    description=f"cycle {event.cycle}",
                    completed=event.epoch,
                    total=event.epochs,
                    status=(
                        f"lr {event.lr:.3g}  sparsity {event.sparsity:.1%}  "
                        f"val {event.val_accuracy:.1%}"
                    ),
                )
                finished = event.cycle + (1 if event.epoch >= event.epochs else 0)
                progress.update(cycles, completed=finished)
            if job.progress.note and not events:  # epochs stand still: say why
                progress.update(epochs, status=job.progress.note)
    return job  # the last read: the job as it ended


def _cycles_done(member: MemberOut) -> tuple[float, int | None]:
    """How many of a member job's cycles are done (fractional within the current
    one), out of how many (cycle 0, the dense training, counts)."""
    p = member.progress
    total = p.cycles + 1 if p.cycles is not None else None
    if member.status == "succeeded" and total is not None:
        return float(total), total
    done = float(p.cycle or 0)
    if p.epoch and p.epochs:
        done += p.epoch / p.epochs
    return done, total


def _member_status(member: MemberOut) -> str:
    p = member.progress
    if member.status != "running" or p.cycle is None:
        return member.status
    if p.note:
        return p.note
    accuracy = f"  best val {p.best_accuracy:.1%}" if p.best_accuracy is not None else ""
    return f"cycle {p.cycle} epoch {p.epoch}/{p.epochs}  sparsity {p.sparsity or 0:.1%}{accuracy}"


def wait_study(client: SiloClient, study_id: int, console: Console, poll: float = 1.0) -> StudyOut:
    """A bar per member job (its cycles, live) until every member has ended; the
    study then, with its comparison table. One request per poll: the study
    carries its members' progress, and each read after the first is a watch that
    returns as the study changes."""
    study, began = client.study(study_id), time.monotonic()
    # A member's cycles are done in fractions (the epochs of the current one): a percentage.
    with _progress(console, TaskProgressColumn(), label_width=20) as progress:
        bars = {
            m.job_id: progress.add_task(f"{m.schedule} seed {m.seed}", total=None, status="")
            for m in study.members
        }
        while True:
            for member in study.members:
                done, total = _cycles_done(member)
                progress.update(
                    bars[member.job_id], completed=done, total=total, status=_member_status(member)
                )
            if all(is_terminal(m.status) for m in study.members):
                return study
            sleep_rest_of(poll, began)
            study, began = client.study(study_id, wait=WATCH_SECONDS), time.monotonic()
