"""The cluster's size as a dispatcher last measured it, and requests no node can hold.

A job's attempt is one Ray actor, and an actor runs on one node: a job fits
the cluster only if some node has all it asks. The bound is therefore the
largest node, not the cluster's total; two nodes of 2 CPUs never run a job of
3. The dispatcher measures the nodes every tick (it is a Ray driver) and
records them here, so the API, which runs no Ray, can refuse such a job at
submit (``SILO_REFUSE_UNFIT_JOBS``) instead of letting it wait forever.

The record keeps each resource's largest node separately: a job asking the
largest node's CPUs and the largest node's GPUs passes even where those are two
different nodes; the dispatcher's free-resource check still holds it back.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from server.db.models import ClusterCapacity, utcnow
from server.settings import Settings
from silo_contract.jobs import Resources

# The record is rewritten when the cluster changes and at least this often, so
# that a stale one means no dispatcher is measuring any more.
REFRESH_SECONDS = 60.0
# Older records are not trusted to refuse a job: the cluster may have grown.
FRESH_SECONDS = 300.0
ROW_ID = 1  # one cluster, one row


@dataclass(frozen=True)
class Capacity:
    nodes: int
    largest_cpus: float
    largest_gpus: float
    largest_memory_gb: float
    total_cpus: float
    total_gpus: float
    total_memory_gb: float

    @classmethod
    def of(cls, nodes: Iterable[Mapping[str, float]]) -> Capacity | None:
        """From each live node's size ({"CPU", "GPU", "memory_gb"}); None for no
        node, which means Ray did not answer rather than a cluster of nothing."""
        sizes = list(nodes)
        if not sizes:
            return None

        def column(key: str) -> list[float]:
            return [float(size.get(key, 0.0)) for size in sizes]

        cpus, gpus, memory = column("CPU"), column("GPU"), column("memory_gb")
        return cls(len(sizes), max(cpus), max(gpus), max(memory), sum(cpus), sum(gpus), sum(memory))


@dataclass(frozen=True)
class Shortfall:
    """One resource a job asks more of than the largest node has."""

    field: str  # the request's field: resources.cpus
    asked: float
    largest: float
    unit: str

    def __str__(self) -> str:
        return (
            f"asks {_amount(self.asked)} {self.unit}, the largest node has {_amount(self.largest)}"
        )


def shortfalls(
    capacity: Capacity, *, cpus: float, gpus: float, memory_gb: float | None
) -> list[Shortfall]:
    """What the job asks that no node of this cluster has (empty: it fits)."""
    asks = [
        ("resources.cpus", cpus, capacity.largest_cpus, "CPU"),
        ("resources.gpus", gpus, capacity.largest_gpus, "GPU"),
        ("resources.memory_gb", memory_gb or 0.0, capacity.largest_memory_gb, "GB memory"),
    ]
    return [Shortfall(*ask) for ask in asks if ask[1] > ask[2]]


def unfit_reason(found: list[Shortfall]) -> str:
    """The queue reason of a job that no node can hold."""
    return ("cannot run on this cluster as it stands: " + "; ".join(map(str, found)))[:200]


def _amount(value: float) -> str:
    return f"{value:.4g}"


# --- the record --------------------------------------------------------------


def record(session: Session, capacity: Capacity, now: datetime | None = None) -> None:
    """Write the measured capacity (one row, inserted or replaced)."""
    values = {**asdict(capacity), "id": ROW_ID, "updated_at": now or utcnow()}
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    insert = dialect.insert(ClusterCapacity).values(values)
    changes = {key: insert.excluded[key] for key in values if key != "id"}
    session.execute(insert.on_conflict_do_update(index_elements=["id"], set_=changes))


# The record's columns in a Capacity's order, then its time: a plain row read by
# a Core statement built once (every submit reads it where unfit jobs are refused;
# the ORM's get cost four times as much).
_TABLE = ClusterCapacity.__table__
_RECORDED = select(*(_TABLE.c[f.name] for f in fields(Capacity)), _TABLE.c.updated_at).where(
    _TABLE.c.id == ROW_ID
)


def measured(session: Session) -> tuple[Capacity, datetime] | None:
    """The recorded capacity however old, and when it was measured; None if never."""
    row = session.execute(_RECORDED).first()
    return None if row is None else (Capacity(*row[:-1]), row.updated_at)


def is_fresh(measured_at: datetime, now: datetime | None = None) -> bool:
    """Whether a record measured then is recent enough to go by (FRESH_SECONDS)."""
    return measured_at >= (now or utcnow()) - timedelta(seconds=FRESH_SECONDS)


def recorded(session: Session, now: datetime | None = None) -> Capacity | None:
    """The recorded capacity if it is recent enough to go by, else None."""
    found = measured(session)
    if found is None or not is_fresh(found[1], now):
        return None
    return found[0]


class UnfitRequestError(ValueError):
    """A job no node of the cluster can hold; ``problems`` name the request's fields."""

    def __init__(self, problems: list[dict[str, str]]) -> None:
        super().__init__("; ".join(f"{p['field']}: {p['message']}" for p in problems))
        self.problems = problems


def refuse_unfit(session: Session, settings: Settings, resources: Resources) -> None:
    """Raise UnfitRequestError where ``SILO_REFUSE_UNFIT_JOBS`` is on and the
    recently recorded cluster cannot hold ``resources``; otherwise do nothing."""
    if not settings.refuse_unfit_jobs:
        return
    capacity = recorded(session)
    if capacity is None:
        return
    found = shortfalls(
        capacity, cpus=resources.cpus, gpus=resources.gpus, memory_gb=resources.memory_gb
    )
    if found:
        raise UnfitRequestError(
            [
                {
                    "field": s.field,
                    "message": f"asks {_amount(s.asked)} {s.unit}; "
                    f"the largest node of this cluster has {_amount(s.largest)}",
                }
                for s in found
            ]
        )
