"""GET /v1/cluster through real HTTP on SQLite and PostgreSQL: the recorded capacity
(fresh, stale, unknown), what running jobs hold per owner, GPU-seconds against fair
share and the quota, the queue by reason, the head's estimated starts, the read
policy, and that its cost does not grow with the queue."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from cluster_jobs import (
    WAITING_GPU,
    add_attempt,
    add_job,
    add_running,
    record,
    user_ids,
)
from servers import database_session
from sqlalchemy import event

from server.db.models import utcnow
from server.jobs import cluster
from server.jobs.forecast import BEHIND_UNKNOWN, HELD_UNKNOWN, NO_CAPACITY, UNFIT
from server.scheduling import Usage, gpu_seconds


def read(live_server, user: str = "alice") -> dict:
    with live_server.client(user) as client:
        response = client.get("/v1/cluster")
    assert response.status_code == 200, response.text
    return response.json()


def close_to(value: str | None, expected: datetime, seconds: float = 5.0) -> bool:
    assert value is not None
    return abs((datetime.fromisoformat(value) - expected).total_seconds()) <= seconds


def test_an_unmeasured_cluster_is_unknown_and_nothing_is_estimated(live_server):
    with database_session(live_server) as session:
        add_job(session, user_ids(session)["alice"], name="mine")
    answer = read(live_server)
    assert answer["capacity"] == {
        "state": "unknown",
        "measured_at": None,
        "nodes": None,
        "total": None,
        "largest_node": None,
    }
    assert answer["in_use"] == {
        "jobs": 0,
        "cpus": 0.0,
        "gpus": 0.0,
        "free_cpus": None,
        "free_gpus": None,
    }
    (head,) = answer["queue"]["head"]
    assert (head["estimated_start"], head["unknown_because"]) == (None, NO_CAPACITY)


def test_a_fresh_record_shows_the_nodes_and_a_stale_one_says_so(live_server):
    record(live_server)
    fresh = read(live_server)["capacity"]
    assert fresh["state"] == "fresh"
    assert close_to(fresh["measured_at"], utcnow())
    assert (fresh["nodes"], fresh["total"], fresh["largest_node"]) == (
        2,
        {"cpus": 8.0, "gpus": 2.0, "memory_gb": 32.0},
        {"cpus": 4.0, "gpus": 2.0, "memory_gb": 16.0},
    )

    record(live_server, age_s=cluster.FRESH_SECONDS + 5)
    with database_session(live_server) as session:
        add_job(session, user_ids(session)["alice"])
    stale = read(live_server)
    assert stale["capacity"]["state"] == "stale"
    assert stale["capacity"]["total"] == fresh["total"]  # the last measurement, shown as such
    assert stale["in_use"]["free_cpus"] == 8.0
    # No dispatcher measures, so none starts anything: no estimate.
    assert stale["queue"]["head"][0]["unknown_because"] == NO_CAPACITY


def test_use_per_owner_counts_running_and_cancelling_jobs_with_fractional_gpus(live_server):
    record(live_server)
    with database_session(live_server) as session:
        ids = user_ids(session)
        add_running(session, ids["alice"], cpus=1, gpus=0.25)
        add_running(session, ids["alice"], cpus=2, gpus=0.5)
        add_job(session, ids["bob"], "cancelling", cpus=3, gpus=1)
        add_job(session, ids["bob"], cpus=1, gpus=1)  # queued: holds nothing
        add_job(session, ids["bob"], "succeeded", cpus=8, gpus=2)
    answer = read(live_server)
    assert answer["in_use"] == {
        "jobs": 3,
        "cpus": 6.0,
        "gpus": 1.75,
        "free_cpus": 2.0,
        "free_gpus": 0.25,
    }
    owners = {row["owner"]: row for row in answer["owners"]}
    assert set(owners) == {"alice", "bob"}
    assert {k: owners["alice"][k] for k in ("running", "cpus", "gpus", "queued")} == {
        "running": 2,
        "cpus": 3.0,
        "gpus": 0.75,
        "queued": 0,
    }
    assert {k: owners["bob"][k] for k in ("running", "cpus", "gpus", "queued")} == {
        "running": 1,
        "cpus": 3.0,
        "gpus": 1.0,
        "queued": 1,
    }


@pytest.mark.parametrize(
    "live_settings", [{"fair_share_window_seconds": 3600, "owner_gpu_quota": 1.5}]
)
def test_gpu_seconds_over_the_window_as_the_dispatcher_counts_them(live_server):
    now = utcnow()
    with database_session(live_server) as session:
        ids = user_ids(session)
        done = add_job(session, ids["alice"], "succeeded", gpus=0.5)
        add_attempt(session, done, now - timedelta(minutes=90), now - timedelta(minutes=30))
        old = add_job(session, ids["alice"], "succeeded", gpus=4)
        add_attempt(session, old, now - timedelta(hours=5), now - timedelta(hours=2))
        cpu_only = add_job(session, ids["alice"], "succeeded", gpus=0)
        add_attempt(session, cpu_only, now - timedelta(minutes=50), now - timedelta(minutes=10))
        running = add_running(session, ids["bob"], gpus=1)
        add_attempt(session, running, now - timedelta(minutes=10), None)
    answer = read(live_server)
    assert answer["fair_share"] == {"window_seconds": 3600.0, "gpu_quota": 1.5}
    owners = {row["owner"]: row for row in answer["owners"]}
    # Alice: 0.5 GPU over the 30 minutes of the window (the rest is older).
    assert owners["alice"]["gpu_seconds"] == pytest.approx(0.5 * 1800, abs=5)
    assert owners["bob"]["gpu_seconds"] == pytest.approx(600, abs=5)
    assert owners["bob"]["gpus"] == 1.0  # held now, against the quota of 1.5
    total = owners["alice"]["gpu_seconds"] + owners["bob"]["gpu_seconds"]
    assert owners["alice"]["share"] == pytest.approx(owners["alice"]["gpu_seconds"] / total)
    # Fair-share order: the owner with fewer GPU-seconds first.
    assert [row["owner"] for row in answer["owners"]] == ["bob", "alice"]
    # The same figures as the dispatcher's own function over the same attempts.
    usage = [Usage(1, 0.5, now - timedelta(minutes=90), now - timedelta(minutes=30))]
    assert gpu_seconds(usage, now, 3600)[1] == pytest.approx(owners["alice"]["gpu_seconds"], abs=1)


def test_the_queue_is_counted_by_reason_with_no_reason_its_own_bucket(live_server):
    with database_session(live_server) as session:
        ids = user_ids(session)
        for _ in range(3):
            add_job(session, ids["alice"], gpus=1, queue_reason=WAITING_GPU)
        add_job(session, ids["bob"], queue_reason="waiting for 8 CPU (free: 2)")
        add_job(session, ids["bob"])
        add_job(session, ids["bob"])
        add_job(session, ids["bob"], "running", queue_reason="left from its wait")
    queue = read(live_server)["queue"]
    assert queue["queued"] == 6
    assert queue["by_reason"] == [
        {"reason": WAITING_GPU, "jobs": 3},
        {"reason": None, "jobs": 2},
        {"reason": "waiting for 8 CPU (free: 2)", "jobs": 1},
    ]


def test_starts_are_estimated_from_the_running_jobs_etas_in_queue_order(live_server):
    record(live_server)  # 8 CPUs, 2 GPUs
    with database_session(live_server) as session:
        ids = user_ids(session)
        add_running(session, ids["alice"], eta_s=600, cpus=1, gpus=1)
        add_running(session, ids["bob"], eta_s=1200, cpus=1, gpus=1)
        first = add_job(session, ids["bob"], name="first", gpus=1, priority=5)
        second = add_job(session, ids["alice"], name="second", gpus=1, priority=1)
        cpu = add_job(session, ids["alice"], name="cpu-only", cpus=2)
    now = utcnow()
    head = read(live_server)["queue"]["head"]
    assert [(job["id"], job["position"]) for job in head] == [(first, 1), (second, 2), (cpu, 3)]
    assert close_to(head[0]["estimated_start"], now + timedelta(seconds=600))
    assert close_to(head[1]["estimated_start"], now + timedelta(seconds=1200))
    # It fits now, but the estimate keeps the queue's order: not before the second.
    assert head[2]["estimated_start"] == head[1]["estimated_start"]
    assert all(job["unknown_because"] is None for job in head)


def test_a_start_behind_a_running_job_without_an_eta_is_unknown(live_server):
    record(live_server)
    with database_session(live_server) as session:
        ids = user_ids(session)
        add_running(session, ids["alice"], cpus=1, gpus=2)  # no progress yet: no ETA
        add_job(session, ids["bob"], name="too-big", gpus=3, priority=9)
        add_job(session, ids["bob"], name="needs-gpu", gpus=1, priority=5)
        add_job(session, ids["bob"], name="behind", cpus=1)
    head = read(live_server)["queue"]["head"]
    assert [(job["name"], job["estimated_start"], job["unknown_because"]) for job in head] == [
        ("too-big", None, UNFIT),
        ("needs-gpu", None, HELD_UNKNOWN),
        ("behind", None, BEHIND_UNKNOWN),
    ]


def mixed_cluster(live_server) -> dict[str, int]:
    """Alice and bob each run one job and queue two, bob's ahead of alice's."""
    record(live_server)
    with database_session(live_server) as session:
        ids = user_ids(session)
        add_running(session, ids["alice"], gpus=1)
        add_running(session, ids["bob"], gpus=0.5)
        bob = [add_job(session, ids["bob"], name="bob-secret", priority=5) for _ in range(2)]
        add_job(session, ids["bob"], queue_reason=f"waiting for job {bob[0]}'s dense training")
        alice = [add_job(session, ids["alice"], name="alice-job", queue_reason=WAITING_GPU)]
    return {"bob": bob[0], "alice": alice[0]}


@pytest.mark.parametrize("live_settings", [{"read_access": "owner"}])
def test_under_owner_access_a_user_sees_totals_but_only_their_own_jobs_and_usage(live_server):
    ids = mixed_cluster(live_server)
    with live_server.client("alice") as client:
        response = client.get("/v1/cluster")
    answer = response.json()
    assert answer["scope"] == "own"
    assert answer["in_use"]["jobs"] == 2 and answer["in_use"]["gpus"] == 1.5  # everyone's
    assert answer["queue"]["queued"] == 4  # everyone's, as a count
    assert [row["owner"] for row in answer["owners"]] == ["alice"]
    assert answer["queue"]["by_reason"] == [{"reason": WAITING_GPU, "jobs": 1}]
    assert [(job["id"], job["position"]) for job in answer["queue"]["head"]] == [(ids["alice"], 4)]
    assert "bob" not in response.text
    assert f"job {ids['bob']}" not in response.text

    admin = read(live_server, "root")
    assert admin["scope"] == "all"
    assert {row["owner"] for row in admin["owners"]} == {"alice", "bob"}
    assert len(admin["queue"]["head"]) == 4


def test_under_team_access_everyone_sees_everyone_s_usage_and_queue(live_server):
    mixed_cluster(live_server)
    answer = read(live_server, "alice")
    assert answer["scope"] == "all"
    assert {row["owner"] for row in answer["owners"]} == {"alice", "bob"}
    assert [job["owner"] for job in answer["queue"]["head"]] == ["bob", "bob", "bob", "alice"]
    assert sum(count["jobs"] for count in answer["queue"]["by_reason"]) == 4


def test_any_user_may_ask_and_an_unchanged_answer_is_304(live_server):
    with live_server.client(None) as anonymous:
        assert anonymous.get("/v1/cluster").status_code == 401
    with live_server.client("bob") as bob:
        first = bob.get("/v1/cluster")
        again = bob.get("/v1/cluster", headers={"If-None-Match": first.headers["ETag"]})
        with database_session(live_server) as session:
            add_job(session, user_ids(session)["bob"])
        changed = bob.get("/v1/cluster", headers={"If-None-Match": first.headers["ETag"]})
    assert first.status_code == 200 and first.headers["Cache-Control"] == "private, no-cache"
    assert (again.status_code, again.content) == (304, b"")
    assert changed.status_code == 200 and changed.json()["queue"]["queued"] == 1


def test_the_cost_is_a_handful_of_statements_whatever_the_queue_s_length(live_server):
    record(live_server)
    with database_session(live_server) as session:
        ids = user_ids(session)
        add_running(session, ids["alice"], eta_s=600, gpus=1)
        for n in range(300):
            add_job(session, ids["alice" if n % 2 else "bob"], gpus=n % 3)
    statements: list[str] = []
    engine = live_server.app.state.engine

    def count(*args) -> None:
        if "api_tokens" not in args[2]:  # the token's lookup, once a second at most
            statements.append(args[2])

    with live_server.client() as client:
        event.listen(engine, "before_cursor_execute", count)
        try:
            answer = client.get("/v1/cluster").json()
        finally:
            event.remove(engine, "before_cursor_execute", count)
    assert answer["queue"]["queued"] == 300 and len(answer["queue"]["head"]) == 20
    assert len(statements) <= 8, statements
