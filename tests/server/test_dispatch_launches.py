"""A dispatcher tick's launches with Ray stood in for: only jobs within the free CPUs
and GPUs start, in the scheduler's order, each taking from what is left
and, at the end, the GPUs card by card as Ray places them."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from server.db.models import Job, JobAttempt, User, utcnow
from server.dispatch import Dispatcher
from server.jobs.claims import claim_job
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
    monkeypatch.setattr(ray_actor, "node_sizes", lambda: {"node": dict(NODE)})
    monkeypatch.setattr(ray_actor, "live_actor_names", frozenset)
    return orders


# One node, large enough for every job here: the free CPUs and GPUs decide.
NODE = {"CPU": 8.0, "GPU": 4.0, "memory_gb": 64.0}


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


# --- GPUs card by card ----------------------------------------------------------------


def running_on_cards(sessions, monkeypatch, cards: dict[int, int | None]) -> None:
    """Claim the queued jobs ``cards`` names (job id -> the card its actor says it
    is on; None: it has not answered), in that order, and stand Ray in for them:
    their actors listed alive, found by name, answering ``devices()`` at once."""
    for job_id in cards:
        with sessions.begin() as session:
            assert claim_job(session, job_id, api_url="http://127.0.0.1:9", artifact_root="/x")
    names = frozenset(ray_actor.actor_name(job_id, 1) for job_id in cards)
    monkeypatch.setattr(ray_actor, "live_actor_names", lambda: names)
    monkeypatch.setattr(ray_actor, "find", lambda job_id, _attempt: job_id)  # the "actor"
    monkeypatch.setattr(ray_actor, "ask_devices", lambda actor: actor)  # its "answer"
    monkeypatch.setattr(
        ray_actor, "answered", lambda asked: [job for job in asked if cards[job] is not None]
    )
    monkeypatch.setattr(
        ray_actor, "answer", lambda job_id: {"node_id": "node", "cards": [cards[job_id]]}
    )


def states(sessions) -> dict[int, tuple[str, int, str | None]]:
    with sessions() as session:
        rows = session.execute(select(Job.id, Job.status, Job.attempt, Job.queue_reason)).all()
    return {job_id: (status, attempt, reason) for job_id, status, attempt, reason in rows}


@pytest.mark.parametrize("order", ["ranked", "fifo"])
def test_a_whole_gpu_waits_for_a_whole_card_with_one_held_while_quarters_pack_the_others(
    sessions, database_url, tmp_path, monkeypatch, launched, order
):
    """Four cards each 0.75 used: 1 GPU is free in sum, but on no card. The 1-GPU
    job (first in either order) is not claimed; the card closest to free, the
    last of four equal ones, is held for it, and quarters fill the other three."""
    ids = queue(
        sessions,
        {
            **{f"holder{card}": {"gpus": 0.75, "cpus": 0.5} for card in range(4)},
            "whole": {"gpus": 1.0, "priority": 1},
            **{f"quarter{n}": {"gpus": 0.25, "owner": "bob"} for n in range(4)},
        },
    )
    running_on_cards(sessions, monkeypatch, {ids[f"holder{card}"]: card for card in range(4)})
    tick = dispatcher(
        sessions, database_url, tmp_path, {"CPU": 6, "GPU": 1.0}, monkeypatch, dispatch_order=order
    )

    assert tick.tick().launched == launched == [ids[f"quarter{n}"] for n in range(3)]
    now = states(sessions)
    assert now[ids["whole"]] == ("queued", 0, "waiting for 1 GPU (free: 0.25)")  # after them
    assert now[ids["quarter3"]] == (
        "queued",
        0,
        f"the GPU card Ray would give it is held for job {ids['whole']}, which waits for 1 GPU",
    )


def test_a_gpu_job_larger_than_what_is_free_in_sum_still_has_its_card_held(
    sessions, database_url, tmp_path, monkeypatch, launched
):
    """Two cards, 0.25 and 0.5 free: the 1-GPU job is beyond the sum, yet read
    since smaller jobs can start, and its card (the one closer to free) held: the
    half that Ray would put there waits, the quarter goes to the other card."""
    monkeypatch.setattr(ray_actor, "node_sizes", lambda: {"node": {**NODE, "GPU": 2.0}})
    ids = queue(
        sessions,
        {
            "on_0": {"gpus": 0.75},
            "on_1": {"gpus": 0.5},
            "whole": {"gpus": 1.0, "priority": 1},
            "half": {"gpus": 0.5, "owner": "bob"},
            "quarter": {"gpus": 0.25, "owner": "bob"},
        },
    )
    running_on_cards(sessions, monkeypatch, {ids["on_0"]: 0, ids["on_1"]: 1})
    tick = dispatcher(sessions, database_url, tmp_path, {"CPU": 6, "GPU": 0.75}, monkeypatch)

    assert tick.tick().launched == launched == [ids["quarter"]]
    now = states(sessions)
    assert now[ids["whole"]] == ("queued", 0, "waiting for 1 GPU (free: 0.5)")
    assert now[ids["half"]][2] == (
        f"the GPU card Ray would give it is held for job {ids['whole']}, which waits for 1 GPU"
    )


def test_attempts_that_have_not_said_where_they_run_are_placed_by_rays_rule(
    sessions, database_url, tmp_path, monkeypatch, launched
):
    """Two 0.75 attempts not answered yet: Ray put them on one card each (best fit),
    so a half fits on neither though 0.5 is free in sum; a quarter does."""
    monkeypatch.setattr(ray_actor, "node_sizes", lambda: {"node": {**NODE, "GPU": 2.0}})
    ids = queue(
        sessions,
        {
            "first": {"gpus": 0.75},
            "second": {"gpus": 0.75},
            "half": {"gpus": 0.5, "priority": 1},
            "quarter": {"gpus": 0.25, "owner": "bob"},
        },
    )
    running_on_cards(sessions, monkeypatch, {ids["first"]: None, ids["second"]: None})
    tick = dispatcher(sessions, database_url, tmp_path, {"CPU": 6, "GPU": 0.5}, monkeypatch)

    assert tick.tick().launched == launched == [ids["quarter"]]
    assert states(sessions)[ids["half"]] == ("queued", 0, "waiting for 0.5 GPU (free: 0.25)")


def test_preemption_stops_one_job_and_waits_for_ray_to_free_its_gpu(
    sessions, database_url, tmp_path, monkeypatch, launched
):
    """Bob's four jobs hold the node's four GPUs when alice's job waits: one tick
    stops bob's newest, and the ticks after it, while Ray has not yet freed its
    GPU (the kill is in flight), stop nothing more and launch nothing."""
    ids = queue(
        sessions,
        {
            **{f"bob{n}": {"cpus": 1, "gpus": 1, "owner": "bob"} for n in range(4)},
            "alice": {"cpus": 1, "gpus": 1},
        },
    )
    bobs = [ids[f"bob{n}"] for n in range(4)]
    for job_id in bobs:  # started a minute apart, the last one newest
        with sessions.begin() as session:
            claim_job(session, job_id, api_url="http://127.0.0.1:1", artifact_root=str(tmp_path))
            attempt = session.scalar(select(JobAttempt).where(JobAttempt.job_id == job_id))
            attempt.started_at = utcnow() - timedelta(minutes=10 - bobs.index(job_id))
    alive = {ray_actor.actor_name(job_id, 1) for job_id in bobs}
    killed: list[int] = []

    def kill(job_id: int, attempt: int) -> bool:
        killed.append(job_id)
        alive.discard(ray_actor.actor_name(job_id, attempt))
        return True

    monkeypatch.setattr(ray_actor, "live_actor_names", lambda: frozenset(alive))
    monkeypatch.setattr(ray_actor, "find", lambda *_: None)  # where it runs: unknown
    monkeypatch.setattr(ray_actor, "kill", kill)
    tick = dispatcher(
        sessions,
        database_url,
        tmp_path,
        {"CPU": 4, "GPU": 0},  # Ray frees the stopped job's GPU later than this test
        monkeypatch,
        preemption="fair-share",
        preemption_min_runtime_seconds=60,
    )

    first = tick.tick()
    later = [tick.tick() for _ in range(3)]

    assert first.preempted == killed == [bobs[-1]]
    assert all(report.preempted == report.launched == [] for report in later)
    with sessions() as session:
        job = session.get(Job, bobs[-1])
        assert (job.status, job.attempt) == ("queued", 1)
        assert job.queue_reason.startswith("attempt 1 preempted (its GPUs went to job ")
        assert session.get(Job, ids["alice"]).status == "queued"
    assert launched == []
