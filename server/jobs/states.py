"""The job status state machine: every status change goes through ``transition``.

queued -> running -> succeeded | failed | cancelled
running -> cancelling -> cancelled (or succeeded/failed if it finished first)
queued -> cancelled             (cancelled before it started)
running -> queued               (the attempt died; a new attempt will resume it)
failed | cancelled -> queued    (retry)
"""

from __future__ import annotations

from silo_contract.status import JobStatus

ALLOWED: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset({JobStatus.RUNNING, JobStatus.CANCELLED}),
    JobStatus.RUNNING: frozenset(
        {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLING, JobStatus.QUEUED}
    ),
    JobStatus.CANCELLING: frozenset({JobStatus.CANCELLED, JobStatus.SUCCEEDED, JobStatus.FAILED}),
    JobStatus.SUCCEEDED: frozenset(),
    JobStatus.FAILED: frozenset({JobStatus.QUEUED}),
    JobStatus.CANCELLED: frozenset({JobStatus.QUEUED}),
}


class IllegalTransitionError(ValueError):
    def __init__(self, old: JobStatus, new: JobStatus) -> None:
        allowed = ", ".join(sorted(ALLOWED[old])) or "nothing (it is final)"
        super().__init__(f"a {old} job cannot become {new}; from {old} it can become {allowed}")
        self.old, self.new = old, new


def transition(old: str, new: str) -> JobStatus:
    """Return ``new`` as a JobStatus if ``old -> new`` is allowed, else raise."""
    old_s, new_s = JobStatus(old), JobStatus(new)
    if new_s not in ALLOWED[old_s]:
        raise IllegalTransitionError(old_s, new_s)
    return new_s
