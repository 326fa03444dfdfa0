"""Rich tables of the API's models, for the ``silo`` CLI's human output."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

from rich.table import Table

from silo_contract.accounts import AuditEventOut, TokenOut, UserOut
from silo_contract.catalog import CatalogOut, PluginOrigin
from silo_contract.jobs import JobOut, JobSummary, Progress
from silo_contract.studies import CellOut, StudyOut, StudySummary


def timestamp(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def pct(value: float | None, digits: int = 2) -> str:
    return f"{value:.{digits}%}" if value is not None else "-"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def counts(status: Mapping[str, int]) -> str:
    """Members per status, as ``2 succeeded, 1 queued``."""
    return ", ".join(f"{n} {name}" for name, n in sorted(status.items())) or "-"


def _cycle(progress: Progress) -> str:
    """``3/10`` while cycle 3 of 10 runs (0 is the dense training), ``-`` before."""
    if progress.cycle is None:
        return "-"
    return f"{progress.cycle}/{progress.cycles if progress.cycles is not None else '?'}"


def span(seconds: float) -> str:
    """A length of time in its largest unit: ``45s``, ``12m``, ``5h``, ``3d``."""
    whole = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if whole >= size:
            return f"{whole // size}{unit}"
    return f"{whole}s"


def age(value: datetime, now: datetime | None = None) -> str:
    """How long ago, in its largest unit (``span``)."""
    return span(((now or datetime.now(UTC)) - value).total_seconds())


# (header, right-aligned); "name" shrinks to fit, "owner" and "tags" are left out
# when the terminal has no room for them (`silo status` shows everything).
_JOB_COLUMNS = (
    ("id", True), ("name", False), ("status", False), ("model", False), ("schedule", False),
    ("cycle", True), ("sparsity", True), ("best val", True), ("age", True),
    ("owner", False), ("tags", False),
)  # fmt: skip
_OPTIONAL = ("owner", "tags")
GAP = 2  # spaces between columns
_NAME_MIN = 8
_NAME_KEPT = 24


def job_table(jobs: Iterable[JobSummary], width: int = 80) -> Table:
    """Jobs one per line, laid out for a terminal ``width`` columns wide."""
    rows = [
        {
            "id": str(job.id),
            "name": job.name or "",
            "status": job.status,
            "model": job.model or "?",
            "schedule": job.schedule or "?",
            "cycle": _cycle(job.progress),
            "sparsity": pct(job.progress.sparsity, 1),
            "best val": pct(job.progress.best_accuracy, 1),
            "age": age(job.created_at),
            "owner": job.owner,
            "tags": ",".join(job.tags),
        }
        for job in jobs
    ]
    widths = {h: max([len(h), *(len(row[h]) for row in rows)]) for h, _ in _JOB_COLUMNS}
    shown = [h for h, _ in _JOB_COLUMNS if h not in _OPTIONAL]
    # The line's last column needs no gap after it; count one anyway, for the cursor.
    used = sum(widths[h] + GAP for h in shown if h != "name") + GAP
    # Owner and tags only where the name still gets up to _NAME_KEPT characters.
    name_kept = min(widths["name"], _NAME_KEPT)
    for optional in _OPTIONAL:
        if used + name_kept + widths[optional] + GAP <= width:
            shown.append(optional)
            used += widths[optional] + GAP
    widths["name"] = max(_NAME_MIN, min(widths["name"], width - used))
    table = Table(box=None, padding=(0, GAP, 0, 0), pad_edge=False, header_style="bold")
    for header, right in _JOB_COLUMNS:
        if header in shown:
            table.add_column(
                header,
                justify="right" if right else "left",
                no_wrap=True,
                overflow="ellipsis",
                min_width=widths[header],
                max_width=widths[header],
            )
    for row in rows:
        table.add_row(*(row[h] for h, _ in _JOB_COLUMNS if h in shown))
    return table


def job_detail(job: JobOut) -> Table:
    """One job as label/value rows: who, what, how far, and where it waits or why it failed."""
    table = Table(title=f"job {job.id}" + (f" ({job.name})" if job.name else ""), show_header=False)
    table.add_column(style="bold")
    table.add_column()
    p = job.progress
    rows = [
        ("status", job.status),
        ("owner", job.owner),
        ("spec", f"{job.model}/{job.dataset}, schedule {job.schedule} ({job.spec_hash})"),
        ("priority", str(job.priority)),
        ("tags", ", ".join(job.tags) or "-"),
        ("resources", f"{job.resources.cpus:g} CPU, {job.resources.gpus:g} GPU"),
        ("created", timestamp(job.created_at)),
        ("started", timestamp(job.started_at)),
        ("finished", timestamp(job.finished_at)),
        ("attempt", str(job.attempt)),
        ("cycle", f"{p.cycle if p.cycle is not None else '-'} of {p.cycles or '-'}"),
        ("epoch", f"{p.epoch if p.epoch is not None else '-'} of {p.epochs or '-'}"),
        ("sparsity", pct(p.sparsity)),
        ("best val accuracy", pct(p.best_accuracy)),
        ("elapsed", _duration(p.elapsed_seconds)),
        ("eta", _duration(p.eta_seconds)),
    ]
    if p.note:
        rows.append(("doing", p.note))
    if job.queue.position is not None or job.queue.reason:
        place = f"{job.queue.position or '-'}{'+' if job.queue.more_ahead else ''}"
        rows.append(("queue", f"#{place}: {job.queue.reason or ''}"))
    if job.error_message:
        rows.append(("error", job.error_message))
    for label, value in rows:
        table.add_row(label, value)
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
        table.add_row(str(row.cycle), pct(row.sparsity), *cells)
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
            timestamp(study.created_at),
            ", ".join(study.schedules),
            ", ".join(str(s) for s in study.seeds),
            counts(study.status),
        )
    return table


def _minute(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value else "-"


def token_state(token: TokenOut) -> str:
    """``active``, ``expired <when>`` or ``revoked <when> by <whom>``."""
    if token.state == "revoked":
        return f"revoked {_minute(token.revoked_at)} by {token.revoked_by or '?'}"
    if token.state == "expired":
        return f"expired {_minute(token.expires_at)}"
    return "active"


def token_table(tokens: Iterable[TokenOut]) -> Table:
    """Tokens one per line (times in UTC); never the tokens themselves."""
    table = Table(box=None, padding=(0, GAP, 0, 0), pad_edge=False, header_style="bold")
    for header in ("id", "user", "prefix", "created", "expires", "state"):
        table.add_column(header, justify="right" if header == "id" else "left", no_wrap=True)
    for token in tokens:
        table.add_row(
            str(token.id),
            token.user,
            token.prefix,
            _minute(token.created_at),
            _minute(token.expires_at) if token.expires_at else "never",
            token_state(token),
        )
    return table


def user_table(users: Iterable[UserOut]) -> Table:
    table = Table(box=None, padding=(0, GAP, 0, 0), pad_edge=False, header_style="bold")
    for header in ("user", "admin", "active", "tokens", "created"):
        table.add_column(header, justify="right" if header == "tokens" else "left", no_wrap=True)
    for user in users:
        table.add_row(
            user.name,
            "yes" if user.admin else "no",
            "yes" if user.active else "no",
            str(user.active_tokens),
            _minute(user.created_at),
        )
    return table


def audit_table(events: Iterable[AuditEventOut]) -> Table:
    table = Table(box=None, padding=(0, GAP, 0, 0), pad_edge=False, header_style="bold")
    for header in ("id", "at", "actor", "action", "target", "details"):
        table.add_column(header, justify="right" if header == "id" else "left")
    for event in events:
        details = ", ".join(f"{k}={v}" for k, v in event.details.items() if v is not None)
        table.add_row(
            str(event.id), timestamp(event.at), event.actor, event.action, event.target, details
        )
    return table


def catalog_table(catalog: CatalogOut) -> Table:
    """One row per name: its family, and where it comes from."""
    table = Table(box=None, padding=(0, GAP, 0, 0), pad_edge=False, header_style="bold")
    for header in ("kind", "name", "from"):
        table.add_column(header, no_wrap=True)
    for kind, items in catalog:
        for item in items:
            origin = item.origin
            source = (
                f"{origin.distribution} {origin.version}"
                if isinstance(origin, PluginOrigin)
                else "built in"
            )
            table.add_row(kind.replace("_", " "), item.name, source)
    return table
