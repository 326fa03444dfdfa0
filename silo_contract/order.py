"""The attempt order: what a dispatcher's claim on a job hands a worker.

One record from the claim to the worker: the claim fills what the database
knows, the dispatcher where to report and the starting weights it resolved,
and a Ray actor receives it as a plain dict (``to_dict``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class AttemptOrder:
    job_id: int
    attempt: int
    token: str  # the attempt's bearer token for the intake routes
    spec: dict[str, Any]
    api_url: str
    artifact_root: str  # laid out as silo_contract.layout says
    # What the attempt holds on the cluster.
    cpus: float = 1.0
    gpus: float = 0.0
    memory_gb: float | None = None
    # The file the spec's model.weights names, resolved by the dispatcher.
    weights: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
