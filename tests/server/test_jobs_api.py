"""The user-facing jobs API through real HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import json
import threading
from datetime import UTC, datetime
from pathlib import Path

from api_jobs import SPEC, spec, submit
from servers import database_session as db

from server.db.models import Artifact, Job, JobEvent
from silo_contract.layout import output_folder


def add_events(live_server, job_id, count, *, superseded=(), status=None):
    with db(live_server) as session:
        job = session.get(Job, job_id)
        for _ in range(count):
            job.event_seq += 1
            seq = job.event_seq
            session.add(
                JobEvent(
                    job_id=job_id,
                    seq=seq,
                    attempt=1,
                    cycle=0,
                    epoch=seq,
                    epochs=count,
                    lr=0.1,
                    max_lr=0.1,
                    train_loss=1.0 / seq,
                    train_accuracy=0.5,
                    val_loss=1.0,
                    val_accuracy=0.5,
                    sparsity=0.0,
                    seconds=1.0,
                    superseded=seq in superseded,
                )
            )
        if status:
            job.status = status


def test_submit_read_back_and_auth(live_server):
    with live_server.client("alice") as alice:
        job = submit(alice, name="first", priority=5, tags=["exp-1", "a.b"])
        assert job["status"] == "queued"
        assert job["owner"] == "alice"
        assert job["tags"] == ["a.b", "exp-1"]
        assert job["spec"]["pruning"]["fraction"] == 0.2
        assert len(job["spec_hash"]) == 16
        read = alice.get(f"/v1/jobs/{job['id']}").json()
        assert read["id"] == job["id"] and read["name"] == "first"
        assert read["progress"]["cycles"] == 3
        assert read["progress"]["eta_seconds"] is None
        assert read["queue"] == {"position": 1, "more_ahead": False, "reason": "next to run"}
        assert datetime.fromisoformat(read["created_at"]).utcoffset().total_seconds() == 0
        missing = alice.get("/v1/jobs/999999")
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "not_found"
        assert alice.get(f"/v1/jobs/{job['id']}/cycles").json() == {"items": []}

    with live_server.client(None) as anonymous:
        for response in (
            anonymous.get("/v1/jobs"),
            anonymous.post("/v1/jobs", json={"spec": SPEC}),
            anonymous.get("/v1/jobs", headers={"Authorization": "Bearer not-a-token"}),
        ):
            assert response.status_code == 401
            assert response.json()["error"]["code"] == "unauthenticated"


def test_invalid_submissions_write_nothing(live_server):
    with live_server.client() as client:
        bad_specs = [
            (spec(model__name="x"), "spec.model.name", "unknown model 'x'; allowed: lenet5, mlp"),
            (spec(pruning__fraction=1.5), "spec.pruning.fraction", "less than 1"),
            (spec(schedule__name="nope"), "spec.schedule", "'silo'"),
        ]
        for data, field, fragment in bad_specs:
            response = client.post("/v1/jobs", json={"spec": data})
            assert response.status_code == 422, response.text
            error = response.json()["error"]
            assert error["code"] == "invalid_spec"
            assert error["message"].startswith(field)
            assert fragment in error["message"]
            assert error["details"][0]["field"] == field
            assert fragment in error["details"][0]["message"]

        for body in (
            {"spec": SPEC, "priority": 101},
            {"spec": SPEC, "priority": -101},
            {"spec": SPEC, "tags": ["Upper"]},
            {"spec": SPEC, "tags": ["-lead"]},
            {"spec": SPEC, "tags": [f"t{i}" for i in range(21)]},
            {"spec": SPEC, "name": "n" * 201},
        ):
            response = client.post("/v1/jobs", json=body)
            assert response.status_code == 422, body
            assert response.json()["error"]["code"] == "invalid_request"

        assert client.get("/v1/jobs").json() == {"items": [], "next_cursor": None}


def test_idempotency_keys(live_server):
    with live_server.client() as client:
        headers = {"Idempotency-Key": "k-1"}
        first = client.post("/v1/jobs", json={"spec": SPEC}, headers=headers)
        assert first.status_code == 201
        again = client.post("/v1/jobs", json={"spec": SPEC}, headers=headers)
        assert again.status_code == 200
        assert again.json()["id"] == first.json()["id"]
        other = client.post("/v1/jobs", json={"spec": SPEC, "priority": 3}, headers=headers)
        assert other.status_code == 409
        assert other.json()["error"]["code"] == "idempotency_conflict"
        too_long = client.post(
            "/v1/jobs", json={"spec": SPEC}, headers={"Idempotency-Key": "k" * 201}
        )
        assert too_long.status_code == 422
        no_key = [submit(client)["id"] for _ in range(2)]
        assert len(set(no_key)) == 2

        # The same key from another user is a different key.
        with live_server.client("bob") as bob:
            assert bob.post("/v1/jobs", json={"spec": SPEC}, headers=headers).status_code == 201

        # Concurrent first uses of one key: one job, one 201.
        results = []

        def post() -> None:
            with live_server.client() as own:
                response = own.post(
                    "/v1/jobs", json={"spec": SPEC}, headers={"Idempotency-Key": "race"}
                )
            results.append((response.status_code, response.json()["id"]))

        threads = [threading.Thread(target=post) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(code for code, _ in results) == [200, 200, 200, 201]
        assert len({job_id for _, job_id in results}) == 1

    with db(live_server) as session:
        job = session.get(Job, first.json()["id"])
        assert job.idempotency_key == "k-1"
        assert len(job.request_hash) == 64
        canonical = {
            "name": None,
            "priority": 0,
            "spec": SPEC,
            "tags": [],
            "resources": {"cpus": 1.0, "gpus": 0.0, "memory_gb": None},
        }
        text = json.dumps(canonical, sort_keys=True, separators=(",", ":"))
        assert job.request_hash == hashlib.sha256(text.encode()).hexdigest()


def test_listing_filters_and_keyset_pagination(live_server):
    with live_server.client("alice") as alice, live_server.client("bob") as bob:
        originals = [submit(alice, tags=["even"] if i % 2 == 0 else [])["id"] for i in range(5)]
        originals += [submit(bob, tags=["even"])["id"] for _ in range(2)]
        alice.post(f"/v1/jobs/{originals[0]}/cancel")

        seen, cursor, pages = [], None, 0
        while True:
            params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
            page = alice.get("/v1/jobs", params=params).json()
            seen += [item["id"] for item in page["items"]]
            cursor, pages = page["next_cursor"], pages + 1
            submit(bob)  # newer rows arrive between pages
            if cursor is None:
                break
        assert sorted(seen) == sorted(originals)
        assert len(seen) == len(set(seen)) == 7
        assert seen == sorted(seen, reverse=True)
        assert pages == 4

        def ids(**params):
            response = alice.get("/v1/jobs", params=params)
            assert response.status_code == 200, response.text
            return {item["id"] for item in response.json()["items"]}

        assert ids(status="cancelled") == {originals[0]}
        assert originals[0] in ids(status=["cancelled", "queued"])
        assert ids(owner="alice") == set(originals[:5])
        assert ids(tag="even") == {originals[0], originals[2], originals[4], *originals[5:]}
        assert ids(owner="nobody") == set()
        assert ids(created_after=datetime(2000, 1, 1, tzinfo=UTC).isoformat()) >= set(originals)
        assert ids(created_before="2000-01-01T00:00:00") == set()
        middle = alice.get(f"/v1/jobs/{originals[3]}").json()["created_at"]
        assert ids(created_before=middle) == set(originals[:3])
        assert set(originals[4:]) <= ids(created_after=middle)
        assert not set(originals[:4]) & ids(created_after=middle)

        bad_status = alice.get("/v1/jobs", params={"status": "sleeping"})
        assert bad_status.status_code == 422
        assert "'queued', 'running'" in bad_status.json()["error"]["message"]
        for cursor in ("not-a-cursor!", "bm9wZQ"):
            bad = alice.get("/v1/jobs", params={"cursor": cursor})
            assert bad.status_code == 422
            assert bad.json()["error"]["details"][0]["field"] == "cursor"
        assert alice.get("/v1/jobs", params={"limit": 0}).status_code == 422
        assert alice.get("/v1/jobs", params={"limit": 201}).status_code == 422


def test_cancel_retry_and_queue_position(live_server):
    with (
        live_server.client("alice") as alice,
        live_server.client("bob") as bob,
        live_server.client("root") as root,
    ):
        low = submit(alice, priority=-5)["id"]
        normal = submit(alice)["id"]
        high = submit(bob, priority=50)["id"]
        later = submit(alice)["id"]
        positions = {
            job_id: alice.get(f"/v1/jobs/{job_id}").json()["queue"]
            for job_id in (low, normal, high, later)
        }
        assert positions[high] == {"position": 1, "more_ahead": False, "reason": "next to run"}
        assert positions[normal] == {"position": 2, "more_ahead": False, "reason": "1 job ahead"}
        assert positions[later] == {"position": 3, "more_ahead": False, "reason": "2 jobs ahead"}
        assert positions[low] == {"position": 4, "more_ahead": False, "reason": "3 jobs ahead"}

        forbidden = bob.post(f"/v1/jobs/{normal}/cancel")
        assert forbidden.status_code == 403
        assert forbidden.json()["error"]["code"] == "forbidden"

        cancelled = alice.post(f"/v1/jobs/{normal}/cancel")
        assert cancelled.status_code == 200
        assert cancelled.json()["status"] == "cancelled"
        assert cancelled.json()["finished_at"] is not None
        assert cancelled.json()["queue"]["position"] is None
        assert alice.get(f"/v1/jobs/{later}").json()["queue"]["position"] == 2

        again = alice.post(f"/v1/jobs/{normal}/cancel")
        assert again.status_code == 409
        assert again.json()["error"]["code"] == "illegal_transition"
        assert "a cancelled job cannot become cancelled" in again.json()["error"]["message"]

        assert bob.post(f"/v1/jobs/{normal}/retry").status_code == 403
        retried = alice.post(f"/v1/jobs/{normal}/retry")
        assert retried.status_code == 200
        assert retried.json()["status"] == "queued"
        assert retried.json()["finished_at"] is None
        not_retryable = alice.post(f"/v1/jobs/{normal}/retry")
        assert not_retryable.status_code == 409
        assert not_retryable.json()["error"]["code"] == "illegal_transition"

        assert root.post(f"/v1/jobs/{high}/cancel").json()["status"] == "cancelled"

        # A running job is asked to stop; asking again changes nothing.
        with db(live_server) as session:
            job = session.get(Job, later)
            job.status, job.started_at, job.attempt = "running", datetime.now(UTC), 1
            job.progress_cycle, job.progress_epoch = 1, 1
        running = alice.get(f"/v1/jobs/{later}").json()
        assert running["progress"]["epochs"] == 2
        assert running["progress"]["eta_seconds"] is not None
        assert alice.post(f"/v1/jobs/{later}/cancel").json()["status"] == "cancelling"
        assert alice.post(f"/v1/jobs/{later}/cancel").json()["status"] == "cancelling"
        with db(live_server) as session:
            session.get(Job, later).status = "succeeded"
        done = alice.post(f"/v1/jobs/{later}/cancel")
        assert done.status_code == 409
        assert "it is final" in done.json()["error"]["message"]
        assert alice.post(f"/v1/jobs/{later}/retry").status_code == 409
        assert alice.post("/v1/jobs/424242/cancel").status_code == 404


def test_events_pages_and_stream(live_server):
    with live_server.client() as client:
        job_id = submit(client)["id"]
        add_events(live_server, job_id, 5, superseded={2})

        page = client.get(f"/v1/jobs/{job_id}/events", params={"limit": 2}).json()
        assert [e["seq"] for e in page["items"]] == [1, 3]
        assert page["next_after"] == 3
        rest = client.get(f"/v1/jobs/{job_id}/events", params={"after": 3}).json()
        assert [e["seq"] for e in rest["items"]] == [4, 5]
        empty = client.get(f"/v1/jobs/{job_id}/events", params={"after": 5}).json()
        assert empty == {"items": [], "next_after": 5}
        every = client.get(f"/v1/jobs/{job_id}/events", params={"include_superseded": "true"})
        assert [e["seq"] for e in every.json()["items"]] == [1, 2, 3, 4, 5]
        assert client.get(f"/v1/jobs/{job_id}/events", params={"limit": 1001}).status_code == 422
        assert client.get("/v1/jobs/999999/events").status_code == 404

        streamed = submit(client)["id"]
        add_events(live_server, streamed, 3)

        def read_stream(headers=None):
            url = f"/v1/jobs/{streamed}/events/stream"
            with client.stream("GET", url, headers=headers or {}) as response:
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("text/event-stream")
                return response.read().decode()

        def finish_soon() -> None:
            with db(live_server) as session:
                session.get(Job, streamed).status = "succeeded"

        timer = threading.Timer(0.3, finish_soon)
        timer.start()
        text = read_stream()
        timer.join()
        frames = [frame for frame in text.split("\n\n") if frame and frame != ": ping"]
        assert [f.splitlines()[0] for f in frames[:3]] == ["id: 1", "id: 2", "id: 3"]
        assert all("event: epoch" in f for f in frames[:3])
        assert frames[-1].startswith("event: end")
        assert len(frames) == 4

        resumed = read_stream({"Last-Event-ID": "2"})
        ids = [line for line in resumed.splitlines() if line.startswith("id: ")]
        assert ids == ["id: 3"]
        assert "event: end" in resumed


def test_artifacts(live_server, tmp_path):
    """Only files in the job's own output folder are served, whatever a row says."""
    payload = b"weights" * 50_000
    root = Path(live_server.app.state.settings.resolved_artifact_root())
    outside = tmp_path / "secret.txt"  # a real file, but not under the artifact root
    outside.write_bytes(payload)
    with live_server.client() as client:
        job_id = submit(client)["id"]
        other_id = submit(client)["id"]
        stored = output_folder(root, job_id) / "model.pt"
        others = output_folder(root, other_id) / "model.pt"
        for path in (stored, others):
            path.parent.mkdir(parents=True)
            path.write_bytes(payload)
        linked = output_folder(root, job_id) / "linked.pt"
        linked.symlink_to(others)
        with db(live_server) as session:
            for name, location in (
                ("model.pt", stored.as_uri()),
                ("plain.pt", str(stored)),
                ("gone.pt", str(root / "missing.pt")),
                ("escape.pt", str(root / ".." / ".." / outside.name)),
                ("outside.pt", str(outside)),
                ("others.pt", str(others)),
                ("linked.pt", str(linked)),
            ):
                session.add(
                    Artifact(
                        job_id=job_id,
                        attempt=1,
                        name=name,
                        size=len(payload),
                        checksum=hashlib.sha256(payload).hexdigest(),
                        location=location,
                    )
                )
        listed = client.get(f"/v1/jobs/{job_id}/artifacts").json()["items"]
        names = [a["name"] for a in listed]
        assert names == sorted(
            ["escape.pt", "gone.pt", "model.pt", "outside.pt", "plain.pt", "others.pt", "linked.pt"]
        )
        assert listed[names.index("model.pt")]["size"] == len(payload)
        for name in ("model.pt", "plain.pt"):
            response = client.get(f"/v1/jobs/{job_id}/artifacts/{name}")
            assert response.status_code == 200
            assert response.content == payload
            assert response.headers["content-disposition"].startswith("attachment")
            assert name in response.headers["content-disposition"]
        for name in ("gone.pt", "nothing.pt", "outside.pt", "escape.pt", "others.pt", "linked.pt"):
            response = client.get(f"/v1/jobs/{job_id}/artifacts/{name}")
            assert response.status_code == 404, name
            assert response.json()["error"]["code"] == "not_found"
