"""Rich tables of the API's models, for the ``silo`` CLI's human output."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime

from rich.table import Table

from silo_client.models import (
    CellOut,
    CycleOut,
    JobOut,
    JobSummary,
    StudyOut,
    StudySummary,
)


def _time(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def _pct(value: float | None) -> str:
    return f"{value:.2%}" if value is not None else "-"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def counts(status: Mapping[str, int]) -> str:
    """Members per status, as ``2 succeeded, 1 queued``."""
    return ", ".join(f"{n} {name}" for name, n in sorted(status.items())) or "-"


def job_table(jobs: Iterable[JobSummary]) -> Table:
    table = Table()
    for header in ("id", "name", "owner", "status", "prio", "tags", "created", "attempt"):
        table.add_column(header, justify="right" if header in ("id", "prio") else "left")
    for job in jobs:
        table.add_row(
            str(job.id),
            job.name or "",
            job.owner,
            job.status,
            str(job.priority),
            ",".join(job.tags),
            _time(job.created_at),
            str(job.attempt),
        )
    return table


def job_detail(job: JobOut) -> Table:
    """One job as label/value rows: who, what, how far, and where it waits or why it failed."""
    table = Table(title=f"job {job.id}" + (f" ({job.name})" if job.name else ""), show_header=False)
    table.add_column(style="bold")
    table.add_column()
    p = job.progress
    schedule = job.spec.get("schedule", {}).get("name", "?")
    model = job.spec.get("model", {}).get("name", "?")
    rows = [
        ("status", job.status),
        ("owner", job.owner),
        ("spec", f"{model}, schedule {schedule} ({job.spec_hash})"),
        ("priority", str(job.priority)),
        ("tags", ", ".join(job.tags) or "-"),
        ("resources", f"{job.resources.cpus:g} CPU, {job.resources.gpus:g} GPU"),
        ("created", _time(job.created_at)),
        ("started", _time(job.started_at)),
        ("finished", _time(job.finished_at)),
        ("attempt", str(job.attempt)),
        ("cycle", f"{p.cycle if p.cycle is not None else '-'} of {p.cycles or '-'}"),
        ("epoch", f"{p.epoch if p.epoch is not None else '-'} of {p.epochs or '-'}"),
        ("sparsity", _pct(p.sparsity)),
        ("best accuracy", _pct(p.best_accuracy)),
        ("elapsed", _duration(p.elapsed_seconds)),
        ("eta", _duration(p.eta_seconds)),
    ]
    if job.queue.position is not None or job.queue.reason:
        rows.append(("queue", f"#{job.queue.position or '-'}: {job.queue.reason or ''}"))
    if job.error_message:
        rows.append(("error", job.error_message))
    for label, value in rows:
        table.add_row(label, value)
    return table


def cycle_table(cycles: Iterable[CycleOut], title: str) -> Table:
    """The cycle table as ``silo run`` prints it."""
    table = Table(title=title)
    for header in ("cycle", "sparsity", "max_lr", "best ep", "val", "test@best", "test end", "sec"):
        table.add_column(header, justify="right")
    for c in cycles:
        table.add_row(
            str(c.cycle),
            _pct(c.sparsity),
            f"{c.max_lr:.5f}",
            str(c.best_epoch),
            _pct(c.best_val_accuracy),
            _pct(c.test_accuracy_at_best_val),
            _pct(c.final_test_accuracy),
            f"{c.seconds:.1f}",
        )
    return table


def _cell(cell: CellOut | None) -> str:
    if cell is None:
        return "-"
    spread = f" ± {cell.std:.2%}" if cell.std is not None else ""
    return f"{cell.mean:.2%}{spread} ({cell.n})"


def comparison_table(study: StudyOut) -> Table:
    """Per cycle: sparsity and each schedule's test accuracy as mean ± std (n seeds)."""
    title = f"study {study.id}" + (f" ({study.name})" if study.name else "")
    table = Table(title=f"{title}: test accuracy at the best validation epoch")
    table.add_column("cycle", justify="right")
    table.add_column("sparsity", justify="right")
    for schedule in study.schedules:
        table.add_column(schedule, justify="right")
    for row in study.comparison:
        cells = [_cell(row.test_accuracy.get(schedule)) for schedule in study.schedules]
        table.add_row(str(row.cycle), _pct(row.sparsity), *cells)
    return table


def study_table(studies: Iterable[StudySummary]) -> Table:
    table = Table()
    for header in ("id", "name", "owner", "created", "schedules", "seeds", "members"):
        table.add_column(header, justify="right" if header == "id" else "left")
    for study in studies:
        table.add_row(
            str(study.id),
            study.name or "",
            study.owner,
            _time(study.created_at),
            ", ".join(study.schedules),
            ", ".join(str(s) for s in study.seeds),
            counts(study.status),
        )
    return table
