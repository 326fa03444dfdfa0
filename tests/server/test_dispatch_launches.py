"""A dispatcher tick's launches with Ray stood in for: only jobs within the free CPUs
and GPUs start, in the scheduler's order, each taking from what is left."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from server.db.models import Job, JobAttempt, User, utcnow
from server.dispatch import Dispatcher
from server.settings import Settings
from silo_contract.order import AttemptOrder
from workers import ray_actor


@pytest.fixture
def launched(monkeypatch) -> list[int]:
    """The jobs launched, in order; nothing runs."""
    orders: list[int] = []

    def launch(order: AttemptOrder) -> None:
        orders.append(order.job_id)

    monkeypatch.setattr(ray_actor, "launch", launch)
    monkeypatch.setattr(ray_actor, "node_sizes", list)  # no node measured: no record
    monkeypatch.setattr(ray_actor, "live_actor_names", frozenset)
    return orders


def queue(sessions, jobs: dict[str, dict]) -> dict[str, int]:
    """One queued job per name, each a second older than the one before it."""
    start = utcnow() - timedelta(minutes=1)
    with sessions.begin() as session:
        owners = {name: User(name=name) for name in ("alice", "bob")}
        session.add_all(owners.values())
        session.flush()
        rows = {
            name: Job(
                owner_id=owners[values.pop("owner", "alice")].id,
                spec={},
                spec_hash="h",
                status="queued",
                created_at=start + timedelta(seconds=n),
                **values,
            )
            for n, (name, values) in enumerate(jobs.items())
        }
        session.add_all(rows.values())
        session.flush()
        return {name: job.id for name, job in rows.items()}


def dispatcher(
    sessions, database_url, tmp_path, free: dict[str, float], monkeypatch, **settings_values
):
    monkeypatch.setattr(ray_actor, "free_resources", lambda: dict(free))
    settings = Settings(database_url=database_url, data_dir=tmp_path, **settings_values)
    return Dispatcher(settings, sessions, api_url="http://127.0.0.1:1")


def test_jobs_start_in_the_schedulers_order_within_what_is_free(
    sessions, database_url, tmp_path, monkeypatch, launched
):
    ids = queue(
        sessions,
        {
            "too_big": {"cpus": 4, "priority": 10},
            "gpu": {"cpus": 2, "gpus": 1, "priority": 5},
            "old": {"cpus": 1},
            "new": {"cpus": 1, "owner": "bob"},
            "half_gpu": {"cpus": 1, "gpus": 0.5, "priority": 1},
        },
    )
    tick = dispatcher(sessions, database_url, tmp_path, {"CPU": 3, "GPU": 1}, monkeypatch)

    report = tick.tick()

    # gpu first (priority 5) leaves 1 CPU and no GPU: half_gpu no longer fits,
    # and of the two that do, bob's goes, though newer: alice has a job running now.
    assert launched == report.launched == [ids["gpu"], ids["new"]]
    with sessions() as session:
        waiting = dict(session.execute(select(Job.id, Job.queue_reason)).all())
    assert waiting[ids["too_big"]] == "waiting for 4 CPU (free: 0)"
    assert waiting[ids["old"]] == "waiting for 1 CPU (free: 0)"
    assert waiting[ids["half_gpu"]] == "waiting for 0.5 GPU (free: 0)"


def test_a_full_cluster_starts_nothing_and_says_why(
    sessions, database_url, tmp_path, monkeypatch, launched
):
    ids = queue(sessions, {"cpu": {"cpus": 1}, "gpu": {"cpus": 1, "gpus": 0.25}})
    tick = dispatcher(sessions, database_url, tmp_path, {"CPU": 0.5, "GPU": 0.0}, monkeypatch)

    assert tick.tick().launched == launched == []
    with sessions() as session:
        waiting = dict(session.execute(select(Job.id, Job.queue_reason)).all())
    assert waiting == {
        ids["cpu"]: "waiting for 1 CPU (free: 0.5)",
        ids["gpu"]: "waiting for 0.25 GPU (free: 0)",
    }


def used_a_gpu_for_an_hour(sessions, job_id: int) -> None:
    """The owner of ``job_id`` ran a 1-GPU job for an hour, ended 5 minutes ago."""
    with sessions.begin() as session:
        used = Job(owner_id=session.get_one(Job, job_id).owner_id, spec={}, gpus=1)
        used.spec_hash, used.status, used.attempt = "h", "succeeded", 1
        session.add(used)
        session.flush()
        ended = utcnow() - timedelta(minutes=5)
        session.add(
            JobAttempt(
                job_id=used.id,
                number=1,
                token_hash="t",
                status="succeeded",
                started_at=ended - timedelta(hours=1),
                ended_at=ended,
            )
        )


def test_the_owner_with_fewer_gpu_seconds_goes_first(
    sessions, database_url, tmp_path, monkeypatch, launched
):
    ids = queue(sessions, {"alice_old": {"gpus": 1}, "bob_new": {"gpus": 1, "owner": "bob"}})
    used_a_gpu_for_an_hour(sessions, ids["alice_old"])  # alice, just now
    tick = dispatcher(sessions, database_url, tmp_path, {"CPU": 8, "GPU": 1}, monkeypatch)

    assert tick.tick().launched == launched == [ids["bob_new"]]


def test_fifo_starts_the_oldest_that_fit_within_the_quota(
    sessions, database_url, tmp_path, monkeypatch, launched
):
    ids = queue(
        sessions,
        {
            "old_big": {"cpus": 4},  # oldest, never fits: passed over
            "old_gpu": {"cpus": 1, "gpus": 1},
            "quota_gpu": {"cpus": 1, "gpus": 1},  # alice's second GPU: over her quota
            "bob_gpu": {"cpus": 1, "gpus": 1, "owner": "bob"},
            "urgent": {"cpus": 1, "priority": 10, "owner": "bob"},  # newest: no matter
            "late": {"cpus": 1},  # no CPU left for it
        },
    )
    tick = dispatcher(
        sessions,
        database_url,
        tmp_path,
        {"CPU": 3, "GPU": 4},
        monkeypatch,
        dispatch_order="fifo",
        owner_gpu_quota=1.0,
    )

    assert tick.tick().launched == launched == [ids["old_gpu"], ids["bob_gpu"], ids["urgent"]]
    with sessions() as session:
        waiting = dict(session.execute(select(Job.id, Job.queue_reason)).all())
    assert waiting[ids["quota_gpu"]] == "the owner's GPU quota (1) is in use"


def test_fifo_ignores_fair_share(sessions, database_url, tmp_path, monkeypatch, launched):
    """The ranked order's test above, in fifo: alice's hour of GPU does not matter."""
    ids = queue(sessions, {"alice_old": {"gpus": 1}, "bob_new": {"gpus": 1, "owner": "bob"}})
    used_a_gpu_for_an_hour(sessions, ids["alice_old"])
    tick = dispatcher(
        sessions, database_url, tmp_path, {"CPU": 8, "GPU": 1}, monkeypatch, dispatch_order="fifo"
    )

    assert tick.tick().launched == launched == [ids["alice_old"]]
