"""Jobs with real data for tests that run no Ray: a tiny digits spec, and a queued
job claimed and run by the real worker code in the test's process, as a Ray
actor would run it (a few seconds on a CPU).

Importable as ``tiny_jobs`` from any test: pytest puts tests/ on sys.path for
tests/conftest.py.
"""

from __future__ import annotations

import time

import pytest

from server.db.session import make_engine, make_session_factory
from server.jobs.claims import claim_next
from silo_contract.order import AttemptOrder
from workers.attempt import run_attempt

# 3 cycles (dense + 2), 2 epochs each.
SPEC = {
    "model": {"name": "mlp"},
    "dataset": {"name": "digits"},
    "pruning": {"method": "global_magnitude", "fraction": 0.5, "cycles": 2},
    "schedule": {"name": "silo", "preset": "resnet20"},
    "training": {"epochs_per_cycle": 2, "batch_size": 128, "dense": {"epochs": 2, "max_lr": 0.1}},
    "seed": 3,
    "device": "cpu",
}
EPOCHS = 2 + 2 * 2

# For behaviour that does not depend on the database behind the API.
sqlite_only = pytest.mark.parametrize("empty_database_url", ["sqlite"], indirect=True)


def claim_order(live_server, spec: dict | None = None) -> AttemptOrder:
    """Submit ``spec`` (None: submit nothing) and claim the first queued job: it is
    then running, and the order is what the dispatcher would hand a worker."""
    if spec is not None:
        with live_server.client() as client:
            response = client.post("/v1/jobs", json={"spec": spec})
            assert response.status_code == 201, response.text
    engine = make_engine(live_server.database_url)
    with make_session_factory(engine).begin() as session:
        order = claim_next(
            session,
            api_url=live_server.base_url,
            artifact_root=live_server.app.state.settings.resolved_artifact_root(),
        )
    engine.dispose()
    assert order is not None, "no queued job to claim"
    return order


def run_job(live_server, spec: dict | None = None) -> int:
    """Claim (after submitting ``spec``, if given) and run a job to success here."""
    order = claim_order(live_server, spec)
    outcome = run_attempt(order)
    assert outcome.status == "succeeded", outcome.message
    return order.job_id


def wait_for(client, job_id: int, done, timeout: float = 180.0) -> dict:
    """Poll the job through the API until ``done(job)``; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if done(job):
            return job
        assert time.monotonic() < deadline, f"timed out; job is {job['status']}: {job}"
        time.sleep(0.2)


def finished(job: dict) -> bool:
    return job["status"] in ("succeeded", "failed", "cancelled")
