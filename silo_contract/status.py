"""Job and attempt statuses, and which of them are final.

How a job moves between its statuses is the server's state machine
(server/jobs/states.py); which statuses end a job is part of the contract,
since clients stop watching there and workers stop reporting.
"""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    CANCELLING = "cancelling"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})


def is_terminal(status: str | None) -> bool:
    """Whether a job in ``status`` has finished for good (until a retry)."""
    return status in TERMINAL


class AttemptStatus(StrEnum):
    """An attempt runs, ends with its job's final status, or is ended by the server."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SUPERSEDED = "superseded"  # a newer attempt of the job took over
    LOST = "lost"  # its worker vanished without a final report
    KILLED = "killed"  # cancelled, and stopped by force after the grace period
    PREEMPTED = "preempted"  # stopped to free its GPUs; the job queued again to resume

    @property
    def is_terminal(self) -> bool:
        return self is not AttemptStatus.RUNNING
