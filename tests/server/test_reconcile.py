"""The dispatcher's reconcile, with Ray's list of named actors stood in for: which
running attempts were lost, which are alive, and which were just launched."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from server.db.models import Job, User
from server.dispatch import LAUNCH_GRACE_SECONDS, Dispatcher, TickReport
from server.jobs.attempts import settle_lost_attempt
from server.jobs.claims import claim_job
from server.settings import Settings
from workers import ray_actor

ADDRESS = {"api_url": "http://127.0.0.1:9", "artifact_root": "/nonexistent"}


@pytest.fixture
def dispatcher(sessions, database_url, tmp_path) -> Dispatcher:
    settings = Settings(database_url=database_url, data_dir=tmp_path, cancel_grace_seconds=0)
    return Dispatcher(settings, sessions, api_url="http://127.0.0.1:1")


@pytest.fixture
def no_lookup_per_job(monkeypatch) -> None:
    """The reconcile asks Ray once per tick, never once per job."""

    def find(job_id: int, attempt: int) -> None:
        raise AssertionError(f"find({job_id}, {attempt}) called")

    monkeypatch.setattr(ray_actor, "find", find)


def running_jobs(sessions, count: int) -> list[int]:
    """``count`` jobs claimed, so running in their first attempt."""
    with sessions.begin() as session:
        owner = User(name="alice")
        session.add(owner)
        session.flush()
        jobs = [Job(owner_id=owner.id, spec={}, spec_hash="h") for _ in range(count)]
        session.add_all(jobs)
        session.flush()
        ids = [job.id for job in jobs]
    for job_id in ids:
        with sessions.begin() as session:
            assert claim_job(session, job_id, **ADDRESS) is not None
    return ids


def statuses(sessions) -> dict[int, tuple[str, int]]:
    with sessions() as session:
        rows = session.execute(select(Job.id, Job.status, Job.attempt)).all()
    return {job_id: (status, attempt) for job_id, status, attempt in rows}


@pytest.mark.usefixtures("no_lookup_per_job")
def test_an_attempt_without_its_actor_is_lost_unless_just_launched(
    sessions, dispatcher, monkeypatch
):
    alive, missing, just_launched, launched_long_ago, older_actor = running_jobs(sessions, 5)
    # older_actor runs its second attempt; only its first attempt's actor is listed.
    with sessions.begin() as session:
        settle_lost_attempt(session, older_actor, 1, max_attempts=3, reason="test")
    with sessions.begin() as session:
        assert claim_job(session, older_actor, **ADDRESS).attempt == 2
    now = time.monotonic()
    dispatcher._launched_at[(just_launched, 1)] = now
    dispatcher._launched_at[(launched_long_ago, 1)] = now - LAUNCH_GRACE_SECONDS - 1
    listed = {ray_actor.actor_name(alive, 1), ray_actor.actor_name(older_actor, 1)}
    monkeypatch.setattr(ray_actor, "live_actor_names", lambda: frozenset(listed))

    report = TickReport()
    dispatcher._reconcile(report)

    assert sorted(report.lost) == sorted([missing, launched_long_ago, older_actor])
    assert statuses(sessions) == {
        alive: ("running", 1),
        missing: ("queued", 1),  # to resume from its checkpoint
        just_launched: ("running", 1),  # its actor may not be listed yet
        launched_long_ago: ("queued", 1),
        older_actor: ("queued", 2),
    }
    assert dispatcher._launched_at.keys() == {(just_launched, 1)}  # the rest decide nothing


@pytest.mark.usefixtures("no_lookup_per_job")
def test_a_cancelling_job_past_its_grace_is_killed_and_one_without_an_actor_ends(
    sessions, dispatcher, monkeypatch
):
    with_actor, without_actor = running_jobs(sessions, 2)
    with sessions.begin() as session:
        for job in session.scalars(select(Job)):
            job.status = "cancelling"
    killed: list[tuple[int, int]] = []
    monkeypatch.setattr(
        ray_actor, "live_actor_names", lambda: frozenset({ray_actor.actor_name(with_actor, 1)})
    )
    monkeypatch.setattr(ray_actor, "kill", lambda job_id, attempt: killed.append((job_id, attempt)))

    report = TickReport()
    dispatcher._reconcile(report)

    assert killed == [(with_actor, 1)]
    assert (report.killed, report.lost) == ([with_actor], [without_actor])
    assert statuses(sessions) == {with_actor: ("cancelled", 1), without_actor: ("cancelled", 1)}


def test_no_running_job_asks_ray_nothing(dispatcher, monkeypatch):
    def listed() -> frozenset[str]:
        raise AssertionError("Ray asked with nothing running")

    monkeypatch.setattr(ray_actor, "live_actor_names", listed)
    report = TickReport()
    dispatcher._reconcile(report)
    assert report == TickReport()


def test_live_actor_names_keeps_the_service_namespace_only(monkeypatch):
    listed = [
        {"name": "silo-job-1-attempt-1", "namespace": "silo"},
        {"name": "silo-job-2-attempt-1", "namespace": "someone-else"},
        {"name": "tune-trial", "namespace": "silo"},
    ]
    calls: list[bool] = []

    def list_named_actors(all_namespaces: bool = False) -> list[dict[str, str]]:
        calls.append(all_namespaces)
        return listed

    monkeypatch.setattr(ray_actor.ray.util, "list_named_actors", list_named_actors)
    assert ray_actor.live_actor_names() == {"silo-job-1-attempt-1", "tune-trial"}
    assert calls == [True]  # whatever namespace the driver joined
