"""``GET /v1/cluster``: the cluster's size, who holds it, fair share, and the queue.

Answers "why is my job not running, and when will it": what the cluster has
and what is free, each owner's use against fair share and the GPU quota, why
the queued jobs wait (counted by reason) and when the head of the queue may
start, estimated from the running jobs' ETAs.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from silo_contract.fields import Timestamp

CapacityState = Literal["fresh", "stale", "unknown"]
Scope = Literal["all", "own"]


class ClusterResources(BaseModel):
    """CPUs, GPUs and memory (GB) of the cluster or of one node."""

    cpus: float
    gpus: float
    memory_gb: float


class CapacityOut(BaseModel):
    """The Ray cluster as the dispatcher last measured it (the API runs no Ray)."""

    state: CapacityState = Field(
        description="fresh: measured within the last 5 minutes (a dispatcher measures "
        "every minute); stale: older, so no dispatcher measures now and nothing starts; "
        "unknown: never measured"
    )
    measured_at: Timestamp | None = None
    nodes: int | None = None
    total: ClusterResources | None = None
    largest_node: ClusterResources | None = Field(
        None,
        description="Each resource's largest node (possibly different nodes): a job "
        "asking more than this never starts, since an attempt runs on one node",
    )


class UseOut(BaseModel):
    """What the running and cancelling jobs hold, and what is left."""

    jobs: int = Field(description="Running and cancelling jobs")
    cpus: float
    gpus: float
    free_cpus: float | None = Field(description="Total less held; null: capacity unknown")
    free_gpus: float | None = Field(description="Total less held; null: capacity unknown")


class FairShareOut(BaseModel):
    window_seconds: float = Field(description="How far back GPU-time counts for fair share")
    gpu_quota: float | None = Field(
        description="GPUs one owner's running jobs may hold at once; null: no limit"
    )


class OwnerUsage(BaseModel):
    owner: str
    running: int = Field(description="Running and cancelling jobs")
    cpus: float = Field(description="CPUs held now")
    gpus: float = Field(description="GPUs held now (against the quota)")
    queued: int
    gpu_seconds: float = Field(
        description="GPU-seconds over the fair-share window, running jobs included; "
        "among jobs of one priority, the owner with the fewest goes first"
    )
    share: float | None = Field(
        description="Fraction of all owners' GPU-seconds in the window; null when none"
    )


class ReasonCount(BaseModel):
    reason: str | None = Field(
        description="Why the dispatcher says these jobs wait; null: it said nothing yet "
        "(it explains the head of the queue only, and a job it can start gets no reason)"
    )
    jobs: int


class QueuedEstimate(BaseModel):
    """A job at the head of the queue and when it may start."""

    position: int = Field(description="1-based, in the queue's order (priority, then age)")
    id: int
    name: str | None
    owner: str
    priority: int
    cpus: float
    gpus: float
    reason: str | None
    estimated_start: Timestamp | None = Field(
        description="Estimate from the running jobs' ETAs; null: unknown"
    )
    unknown_because: str | None = Field(None, description="Why estimated_start is null")


class QueueOut(BaseModel):
    queued: int = Field(description="Every queued job, everyone's")
    by_reason: list[ReasonCount] = Field(description="Most jobs first")
    head: list[QueuedEstimate] = Field(
        description="The head of the queue with estimated starts. The dispatcher's real "
        "order also weighs fair share and aging, so these are estimates"
    )


class ClusterOut(BaseModel):
    scope: Scope = Field(
        description="all: owners, reasons and the head are everyone's; own: the caller's "
        "only (SILO_READ_ACCESS=owner), while capacity, use and the queue's length stay "
        "the whole cluster's"
    )
    capacity: CapacityOut
    in_use: UseOut
    fair_share: FairShareOut
    owners: list[OwnerUsage] = Field(
        description="Owners holding, queueing or having used GPUs in the window, in "
        "fair-share order: fewest GPU-seconds first"
    )
    queue: QueueOut
