"""Studies through real HTTP: members, validation, the comparison table."""

from __future__ import annotations

import statistics

from sqlalchemy import select

from server.db.models import CycleResultRow, Job
from server.db.session import make_engine, make_session_factory

BASE = {
    "model": {"name": "mlp"},
    "dataset": {"name": "digits"},
    "pruning": {"fraction": 0.5, "cycles": 2},
    "schedule": {"name": "silo"},
    "training": {"epochs_per_cycle": 2, "dense": {"epochs": 2}},
    "device": "cpu",
}


def test_a_study_queues_one_job_per_schedule_and_seed(live_server):
    body = {
        "spec": BASE,
        "schedules": [{"name": "silo"}, {"name": "lr_rewind"}, {"name": "silo", "alpha": 0.1}],
        "seeds": [0, 1],
        "name": "digits",
        "tags": ["study"],
        "resources": {"cpus": 0.5},
    }
    with live_server.client() as client:
        response = client.post("/v1/studies", json=body)
        assert response.status_code == 201, response.text
        study = response.json()
        assert study["schedules"] == ["silo#1", "lr_rewind", "silo#2"]
        assert study["status"] == {"queued": 6}
        assert [(m["schedule"], m["seed"]) for m in study["members"]] == [
            (label, seed) for label in ("silo#1", "lr_rewind", "silo#2") for seed in (0, 1)
        ]
        for member in study["members"]:  # each member carries its job's progress
            read = client.get(f"/v1/jobs/{member['job_id']}").json()["progress"]
            assert member["progress"] == read and read["cycles"] == BASE["pruning"]["cycles"]
        job = client.get(f"/v1/jobs/{study['members'][5]['job_id']}").json()
        assert job["spec"]["schedule"]["alpha"] == 0.1 and job["spec"]["seed"] == 1
        assert job["tags"] == ["study"] and job["resources"]["cpus"] == 0.5
        assert job["name"] == "digits: silo#2, seed 1"
        assert client.get(f"/v1/studies/{study['id']}").json() == study
        assert client.get("/v1/studies/999").status_code == 404
    engine = make_engine(live_server.database_url)
    with make_session_factory(engine)() as session:
        dense = session.execute(select(Job.spec, Job.dense_identity)).all()
    engine.dispose()
    by_seed = {}
    for spec, identity in dense:  # one dense training per seed, shared by the schedules
        by_seed.setdefault(spec["seed"], set()).add(identity)
    assert all(len(identities) == 1 for identities in by_seed.values())
    assert by_seed[0] != by_seed[1]


def test_a_bad_member_is_refused_naming_the_field_and_nothing_is_stored(live_server):
    cases = [
        ({"schedules": [{"name": "silo"}, {"name": "silo", "beta": -1}]}, "schedules[1].beta"),
        ({"schedules": [{"name": "nope"}]}, "schedules[0]"),
        ({"seeds": [1, 1]}, "seeds"),
        ({"spec": {**BASE, "model": {"name": "nope"}}}, "spec.model.name"),
        ({"schedules": []}, "schedules"),
        # The base spec's own schedule and seed are replaced, yet a wrong one is refused.
        ({"spec": {**BASE, "schedule": {"name": "silo", "milestones": ["x"]}}}, "spec.schedule"),
        ({"spec": {**BASE, "seed": "seven"}}, "spec.seed"),
        (
            {
                "spec": {
                    **BASE,
                    "pruning": {"cycles": 2, "retraining": "weight_rewind", "rewind_epoch": 99},
                }
            },
            '"spec"',  # a rule across spec fields is the spec's, not "spec.spec"
        ),
    ]
    with live_server.client() as client:
        for change, field in cases:
            response = client.post("/v1/studies", json={"spec": BASE, **change})
            assert response.status_code == 422, response.text
            assert field in response.text
        assert client.get("/v1/jobs").json()["items"] == []


def test_the_comparison_gives_mean_and_spread_over_seeds(live_server):
    body = {"spec": BASE, "schedules": [{"name": "silo"}, {"name": "lr_rewind"}], "seeds": [0, 1]}
    with live_server.client() as client:
        study = client.post("/v1/studies", json=body).json()
    accuracy = {("silo", 0): 0.90, ("silo", 1): 0.94, ("lr_rewind", 0): 0.80}
    engine = make_engine(live_server.database_url)
    with make_session_factory(engine).begin() as session:
        for member in study["members"]:
            key = (member["schedule"], member["seed"])
            if key not in accuracy:
                continue  # lr_rewind seed 1 has not finished its cycle yet
            session.add(
                CycleResultRow(
                    job_id=member["job_id"],
                    attempt=1,
                    cycle=1,
                    sparsity=0.5,
                    alive_weights=100,
                    max_lr=0.1,
                    best_epoch=1,
                    best_val_accuracy=0.9,
                    test_accuracy_at_best_val=accuracy[key],
                    final_val_accuracy=0.9,
                    final_test_accuracy=0.9,
                    seconds=1.0,
                    extras={},
                )
            )
    engine.dispose()
    with live_server.client() as client:
        (row,) = client.get(f"/v1/studies/{study['id']}").json()["comparison"]
    assert (row["cycle"], row["sparsity"]) == (1, 0.5)
    silo = row["test_accuracy"]["silo"]
    assert silo["mean"] == statistics.fmean([0.90, 0.94]) and silo["n"] == 2
    assert silo["std"] == statistics.stdev([0.90, 0.94])
    assert row["test_accuracy"]["lr_rewind"] == {"mean": 0.80, "std": None, "n": 1}


def test_studies_are_listed_newest_first_with_their_members_per_status(live_server):
    body = {"spec": BASE, "schedules": [{"name": "silo"}, {"name": "lr_rewind"}], "seeds": [0]}
    with live_server.client() as client:
        ids = [client.post("/v1/studies", json=body).json()["id"] for _ in range(3)]
        client.post(
            f"/v1/jobs/{client.get(f'/v1/studies/{ids[0]}').json()['members'][0]['job_id']}/cancel"
        )
        first = client.get("/v1/studies", params={"limit": 2}).json()
        rest = client.get("/v1/studies", params={"limit": 2, "cursor": first["next_cursor"]}).json()
        bad = client.get("/v1/studies", params={"cursor": "x"})
    assert [s["id"] for s in first["items"]] == [ids[2], ids[1]]
    assert [s["id"] for s in rest["items"]] == [ids[0]]
    assert rest["next_cursor"] is None
    assert first["items"][0]["schedules"] == ["silo", "lr_rewind"]
    assert first["items"][0]["status"] == {"queued": 2}
    assert rest["items"][0]["status"] == {"queued": 1, "cancelled": 1}
    assert bad.status_code == 422
    assert "cursor" in bad.text
