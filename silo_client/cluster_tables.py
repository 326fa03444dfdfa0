"""``silo cluster``'s tables: the cluster's size and use, each owner's use against
fair share and the GPU quota, the queue by reason, and its head's estimated starts."""

from __future__ import annotations

from datetime import UTC, datetime

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from silo_client.render import GAP, pct, span, timestamp
from silo_contract.cluster import ClusterOut, QueuedEstimate

NO_REASON = "(none given yet: not yet looked at, or about to start)"


def _amount(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _table(*columns: tuple[str, bool]) -> Table:
    """A borderless table of (header, right-aligned) columns."""
    table = Table(box=None, padding=(0, GAP, 0, 0), pad_edge=False, header_style="bold")
    for header, right in columns:
        table.add_column(header, justify="right" if right else "left")
    return table


def _section(title: str, table: Table, note: str | None = None) -> Group:
    """A table under its title and over its note, each a line of its own (a table's
    own title and caption would wrap at the table's width)."""
    parts: list[RenderableType] = [Text(title, style="bold"), table]
    if note:
        parts.append(Text(note, style="dim"))
    return Group(*parts)


def capacity_section(cluster: ClusterOut) -> Group:
    """The cluster's size as last measured, what the running jobs hold, what is free."""
    capacity, use = cluster.capacity, cluster.in_use
    if capacity.state == "unknown":
        title = "cluster: size unknown (no dispatcher has measured it)"
    else:
        nodes = _plural(capacity.nodes or 0, "node")
        title = f"cluster: {nodes}, measured {timestamp(capacity.measured_at)} ({capacity.state})"
    table = _table(
        ("", False), ("total", True), ("in use", True), ("free", True), ("largest node", True)
    )
    rows = (
        ("CPU", "cpus", use.cpus, use.free_cpus),
        ("GPU", "gpus", use.gpus, use.free_gpus),
        ("memory GB", "memory_gb", None, None),  # the jobs' memory is not tracked
    )
    for label, key, held, free in rows:
        total = getattr(capacity.total, key, None)
        largest = getattr(capacity.largest_node, key, None)
        table.add_row(label, _amount(total), _amount(held), _amount(free), _amount(largest))
    return _section(title, table, _plural(use.jobs, "running job"))


def owners_section(cluster: ClusterOut) -> Group:
    """Each owner's hold now and GPU-time over the fair-share window, fewest first."""
    share = cluster.fair_share
    quota = f"{share.gpu_quota:g} per owner" if share.gpu_quota is not None else "none"
    table = _table(
        ("owner", False),
        ("running", True),
        ("CPU", True),
        ("GPU", True),
        ("queued", True),
        ("GPU-hours", True),
        ("share", True),
    )
    for row in cluster.owners:
        table.add_row(
            row.owner,
            str(row.running),
            _amount(row.cpus),
            _amount(row.gpus),
            str(row.queued),
            f"{row.gpu_seconds / 3600:.2f}",
            pct(row.share, 1),
        )
    title = f"fair share: GPU-time over the last {span(share.window_seconds)}; GPU quota: {quota}"
    return _section(title, table)


def reasons_section(cluster: ClusterOut) -> Group:
    """How many queued jobs wait for each reason."""
    table = _table(("jobs", True), ("reason", False))
    for count in cluster.queue.by_reason:
        table.add_row(str(count.jobs), count.reason or NO_REASON)
    return _section(f"queue: {_plural(cluster.queue.queued, 'job')}", table)


def _start(job: QueuedEstimate, now: datetime) -> str:
    if job.estimated_start is None:
        return "unknown"
    start = job.estimated_start
    wait = (start - now).total_seconds()
    if wait < 1:
        return "now"
    at = f"{start:%H:%M}" if wait < 86400 else f"{start:%Y-%m-%d %H:%M}"
    return f"in {span(wait)} ({at} UTC)"


def head_section(cluster: ClusterOut, now: datetime | None = None) -> Group:
    """The head of the queue with estimated starts, and why each waits."""
    now = now or datetime.now(UTC)
    table = _table(
        ("#", True),
        ("id", True),
        ("name", False),
        ("owner", False),
        ("CPU", True),
        ("GPU", True),
        ("estimated start", False),
        ("why", False),
    )
    for job in cluster.queue.head:
        table.add_row(
            str(job.position),
            str(job.id),
            job.name or "",
            job.owner,
            _amount(job.cpus),
            _amount(job.gpus),
            _start(job, now),
            job.unknown_because or job.reason or "",
        )
    note = (
        "Estimated in the queue's order from the running jobs' ETAs; "
        "the dispatcher also weighs fair share and aging."
    )
    return _section("next to run", table, note)


def cluster_sections(cluster: ClusterOut, now: datetime | None = None) -> list[Group]:
    """Size and use, owners, the queue by reason, its head; in that order."""
    return [
        capacity_section(cluster),
        owners_section(cluster),
        reasons_section(cluster),
        head_section(cluster, now),
    ]
