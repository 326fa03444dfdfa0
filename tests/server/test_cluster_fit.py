"""The recorded cluster capacity and the submit check that uses it, on SQLite and
PostgreSQL: a job no node can hold is refused when SILO_REFUSE_UNFIT_JOBS says so."""

from __future__ import annotations

from dataclasses import asdict
from datetime import timedelta

import pytest
from tiny_jobs import SPEC

from server.db.models import utcnow
from server.db.session import make_engine, make_session_factory
from server.jobs import cluster
from server.jobs.cluster import Capacity

TWO_NODES = Capacity.of(
    [{"CPU": 2.0, "GPU": 0.0, "memory_gb": 8.0}, {"CPU": 2.0, "GPU": 1.0, "memory_gb": 16.0}]
)


def test_the_capacity_is_largest_node_and_total_per_resource():
    assert asdict(TWO_NODES) == {
        "nodes": 2,
        "largest_cpus": 2.0,
        "largest_gpus": 1.0,
        "largest_memory_gb": 16.0,
        "total_cpus": 4.0,
        "total_gpus": 1.0,
        "total_memory_gb": 24.0,
    }
    assert Capacity.of([]) is None  # Ray answered nothing: unknown, not empty


def test_the_record_is_replaced_and_goes_stale(sessions):
    smaller = Capacity.of([{"CPU": 1.0, "GPU": 0.0, "memory_gb": 2.0}])
    for capacity in (TWO_NODES, smaller):
        with sessions.begin() as session:
            cluster.record(session, capacity)
        with sessions() as session:
            assert cluster.recorded(session) == capacity
    later = utcnow() + timedelta(seconds=cluster.FRESH_SECONDS + 1)
    with sessions() as session:
        assert cluster.recorded(session, now=later) is None


@pytest.fixture
def refusing(live_server):
    """The live API with SILO_REFUSE_UNFIT_JOBS on and two nodes recorded."""
    state = live_server.app.state
    settings = state.settings
    state.settings = settings.model_copy(update={"refuse_unfit_jobs": True})
    engine = make_engine(live_server.database_url)
    with make_session_factory(engine).begin() as session:
        cluster.record(session, TWO_NODES)
    engine.dispose()
    yield live_server
    state.settings = settings


def test_a_job_no_node_can_hold_is_refused_at_submit(refusing):
    with refusing.client() as client:
        refused = client.post("/v1/jobs", json={"spec": SPEC, "resources": {"cpus": 3}})
        accepted = client.post("/v1/jobs", json={"spec": SPEC, "resources": {"cpus": 2, "gpus": 1}})
        listed = client.get("/v1/jobs").json()["items"]
    assert refused.status_code == 422, refused.text
    assert refused.json() == {
        "error": {
            "code": "invalid_request",
            "message": "resources.cpus: asks 3 CPU; the largest node of this cluster has 2",
            "details": [
                {
                    "field": "resources.cpus",
                    "message": "asks 3 CPU; the largest node of this cluster has 2",
                }
            ],
        }
    }
    assert accepted.status_code == 201, accepted.text
    assert [job["id"] for job in listed] == [accepted.json()["id"]]  # nothing stored


def test_a_study_no_node_can_hold_is_refused_at_submit(refusing):
    body = {"spec": SPEC, "schedules": [{"name": "silo"}], "seeds": [0]}
    with refusing.client() as client:
        refused = client.post("/v1/studies", json={**body, "resources": {"memory_gb": 20}})
        accepted = client.post("/v1/studies", json={**body, "resources": {"memory_gb": 16}})
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["details"] == [
        {
            "field": "resources.memory_gb",
            "message": "asks 20 GB memory; the largest node of this cluster has 16",
        }
    ]
    assert accepted.status_code == 201, accepted.text


def test_without_the_setting_or_a_recent_record_an_unfit_job_is_queued(refusing):
    unfit = {"spec": SPEC, "resources": {"cpus": 3}}
    state = refusing.app.state
    refusing_settings = state.settings
    state.settings = refusing_settings.model_copy(update={"refuse_unfit_jobs": False})
    with refusing.client() as client:
        assert client.post("/v1/jobs", json=unfit).status_code == 201
    state.settings = refusing_settings
    engine = make_engine(refusing.database_url)
    with make_session_factory(engine).begin() as session:
        stale = utcnow() - timedelta(seconds=cluster.FRESH_SECONDS + 1)
        cluster.record(session, TWO_NODES, now=stale)
    engine.dispose()
    with refusing.client() as client:
        assert client.post("/v1/jobs", json=unfit).status_code == 201
