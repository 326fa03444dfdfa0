"""Values past what a column holds are a 4xx naming the field, never a 500,
on SQLite and PostgreSQL: ids, cursors and intake integers past 2**53 - 1 (2**31 - 1
for INTEGER columns), times that overflow once converted to UTC, names longer than
their column, and a token whose user was deleted while it sat in the cache."""

from __future__ import annotations

import httpx
from sqlalchemy import delete, select
from tiny_jobs import SPEC

from server.db.models import ApiToken, Job, User
from server.db.session import make_engine, make_session_factory
from server.jobs.attempts import start_attempt
from silo_contract.fields import MAX_ID

BIG = 2**63
INT_BIG = 2**31


def field_of(response) -> str:
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    return response.json()["error"]["details"][0]["field"]


def bearer(live_server, token: str) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"}
    return httpx.Client(base_url=live_server.base_url, headers=headers, timeout=30)


def sessions(live_server):
    return make_session_factory(make_engine(live_server.database_url))


def test_ids_cursors_and_after_are_bounded(live_server):
    """Up to 2**53 - 1 (what a JSON number holds exactly) an id is looked up; past
    it, and far past it at 2**63 where the database itself would fail, it is a 422."""
    with live_server.client() as client:
        job_id = client.post("/v1/jobs", json={"spec": SPEC}).json()["id"]
        for big in (MAX_ID + 1, 2**63, 2**70):
            for path in (
                f"/v1/jobs/{big}",
                f"/v1/jobs/{big}/cycles",
                f"/v1/jobs/{big}/events",
                f"/v1/jobs/{big}/logs",
                f"/v1/jobs/{big}/artifacts",
                f"/v1/studies/{big}",
            ):
                assert field_of(client.get(path)) in ("job_id", "study_id"), path
            for path in (f"/v1/jobs/{big}/cancel", f"/v1/jobs/{big}/retry"):
                assert field_of(client.post(path)) == "job_id", path
            after = client.get(f"/v1/jobs/{job_id}/events", params={"after": big})
            assert field_of(after) == "after"
        assert client.get(f"/v1/jobs/{MAX_ID}").status_code == 404
        assert client.get(f"/v1/studies/{MAX_ID}").status_code == 404
        assert client.get(f"/v1/jobs/{-(2**63)}").status_code == 422
        assert client.get(f"/v1/jobs/{job_id}/events", params={"after": MAX_ID}).is_success
        assert field_of(client.get(f"/v1/jobs/{job_id}/logs", params={"attempt": INT_BIG})) == (
            "attempt"
        )
        resumed = client.get(
            f"/v1/jobs/{job_id}/events/stream", headers={"Last-Event-ID": str(2**63)}
        )
        assert field_of(resumed) == "last-event-id"

        # A cursor is "<microseconds since 1970>.<id>": any such string is a place
        # in the list; a longer one, or anything else, is refused.
        assert client.get("/v1/jobs", params={"cursor": "0.0"}).json()["items"] == []
        for cursor in ("1.99999999999999999", "99999999999999999.1", "MTIz", "1.2.3", "-1.2"):
            assert field_of(client.get("/v1/jobs", params={"cursor": cursor})) == "cursor"
        assert field_of(client.get("/v1/studies", params={"cursor": "9" * 19})) == "cursor"


def test_times_that_overflow_in_utc_are_refused(live_server):
    with live_server.client() as client:
        for name, value in (
            ("created_after", "0001-01-01T00:00:00+01:00"),
            ("created_before", "9999-12-31T23:59:59-01:00"),
        ):
            response = client.get("/v1/jobs", params={name: value})
            assert field_of(response) == name
            assert "UTC" in response.json()["error"]["message"]
        assert client.get("/v1/jobs", params={"created_after": "0001-01-01T00:00:00"}).is_success
        assert client.get("/v1/jobs", params={"created_before": "9999-12-31T23:59:59"}).is_success


def test_submitted_values_fit_their_columns(live_server):
    with live_server.client() as client:
        for body, field in (
            ({"spec": {**SPEC, "seed": INT_BIG}}, "spec.seed"),
            ({"spec": SPEC, "priority": BIG}, "priority"),
            ({"spec": SPEC, "name": "n" * 201}, "name"),
        ):
            assert field_of(client.post("/v1/jobs", json=body)) == field
        key = client.post("/v1/jobs", json={"spec": SPEC}, headers={"Idempotency-Key": "k" * 201})
        assert field_of(key) == "idempotency-key"
        study = {"spec": SPEC, "schedules": [{"name": "silo"}], "seeds": [INT_BIG]}
        assert field_of(client.post("/v1/studies", json=study)) == "seeds[0]"
        # The longest study name still leaves room for the members' names.
        study = {"spec": SPEC, "schedules": [{"name": "silo"}], "seeds": [0], "name": "s" * 200}
        created = client.post("/v1/studies", json=study)
        assert created.status_code == 201, created.text
        member = client.get(f"/v1/jobs/{created.json()['members'][0]['job_id']}").json()
        assert len(member["name"]) == 200 and member["name"].endswith(": silo, seed 0")


def test_resources_ray_could_never_place_are_refused(live_server):
    """Ray places a job's GPUs on one card or on whole cards, in steps of 1e-4:
    a request it would never place is a 422 at submit, not a job queued for ever."""
    with live_server.client() as client:
        for resources in ({"gpus": 1.5}, {"gpus": 2.25}, {"gpus": 0.00001}, {"cpus": 0.00001}):
            refused = client.post("/v1/jobs", json={"spec": SPEC, "resources": resources})
            assert refused.status_code == 422, (resources, refused.text)
            assert field_of(refused) == f"resources.{next(iter(resources))}"
        study = {"spec": SPEC, "schedules": [{"name": "silo"}], "seeds": [0]}
        refused = client.post("/v1/studies", json={**study, "resources": {"gpus": 1.5}})
        assert field_of(refused) == "resources.gpus"
        for gpus in (0.0001, 0.25, 1, 2):
            body = {"spec": SPEC, "resources": {"gpus": gpus}}
            accepted = client.post("/v1/jobs", json=body)
            assert accepted.status_code == 201, (gpus, accepted.text)
            assert accepted.json()["resources"]["gpus"] == gpus


def test_intake_integers_fit_their_columns(live_server):
    factory = sessions(live_server)
    with factory.begin() as session:
        alice = session.scalar(select(User).where(User.name == "alice"))
        job = Job(owner_id=alice.id, spec=SPEC, spec_hash="x", status="queued")
        session.add(job)
        session.flush()
        job_id = job.id
        _, token = start_attempt(session, job_id)
    event = {
        "cycle": 0,
        "epoch": 1,
        "epochs": 2,
        "cycles": 2,
        "lr": 0.1,
        "max_lr": 0.1,
        "train_loss": 1.0,
        "train_accuracy": 0.5,
        "val_loss": 1.0,
        "val_accuracy": 0.5,
        "sparsity": 0.0,
        "seconds": 1.0,
    }
    cycle = {
        "cycle": 0,
        "sparsity": 0.0,
        "alive_weights": 10,
        "max_lr": 0.1,
        "best_epoch": 1,
        "best_val_accuracy": 0.5,
        "test_accuracy_at_best_val": 0.5,
        "final_val_accuracy": 0.5,
        "final_test_accuracy": 0.5,
        "seconds": 1.0,
    }
    base = f"/v1/jobs/{job_id}/attempts/1"
    with bearer(live_server, token) as worker:
        for name in ("cycle", "epoch", "epochs", "cycles"):
            body = {"events": [{**event, name: INT_BIG}]}
            assert field_of(worker.post(f"{base}/events", json=body)) == f"events[0].{name}"
        assert field_of(worker.post(f"{base}/cycles", json={**cycle, "best_epoch": INT_BIG})) == (
            "best_epoch"
        )
        big = {**cycle, "alive_weights": MAX_ID + 1}
        assert field_of(worker.post(f"{base}/cycles", json=big)) == ("alive_weights")
        assert worker.post(f"{base}/cycles", json={**cycle, "alive_weights": MAX_ID}).is_success
        assert worker.post(f"/v1/jobs/{job_id}/attempts/{INT_BIG}/events", json={}).status_code == (
            422
        )


def test_a_deleted_users_cached_token_is_a_401_not_a_500(live_server):
    """The token is answered from the cache for a moment after its user is gone;
    what it asks for then is refused as unauthenticated."""
    factory = sessions(live_server)
    with factory.begin() as session:
        from server.auth.tokens import create_user_token

        token = create_user_token(session, "leaver")
    with bearer(live_server, token) as client:
        assert client.get("/v1/jobs").status_code == 200  # now in the cache
        with factory.begin() as session:
            user = session.scalar(select(User).where(User.name == "leaver"))
            session.execute(delete(ApiToken).where(ApiToken.user_id == user.id))
            session.delete(user)
        job = client.post("/v1/jobs", json={"spec": SPEC})
        study = client.post(
            "/v1/studies", json={"spec": SPEC, "schedules": [{"name": "silo"}], "seeds": [0]}
        )
        for response in (job, study):
            assert response.status_code == 401, response.text
            assert response.json()["error"]["code"] == "unauthenticated"
    with factory() as session:
        assert session.scalar(select(Job).where(Job.name.is_not(None))) is None
