"""Uploaded files through real HTTP on both databases: streamed to the artifact
root with their SHA-256, bounded by SILO_MAX_UPLOAD_BYTES (413, nothing kept),
nothing left by a client that goes away, private under SILO_READ_ACCESS=owner,
and named by a spec's model.weights only in the forms the API reads."""

from __future__ import annotations

import hashlib
import socket
import time
from pathlib import Path

import pytest
from servers import database_session
from sqlalchemy import func, select
from tiny_jobs import SPEC

from server.db.models import UploadedFile

LIMIT = 256 * 1024
OCTETS = {"Content-Type": "application/octet-stream"}


def files_folder(live_server) -> Path:
    return Path(live_server.app.state.settings.resolved_artifact_root()) / "files"


def stored(live_server) -> list[str]:
    folder = files_folder(live_server)
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def rows(live_server) -> int:
    with database_session(live_server) as session:
        return session.scalar(select(func.count()).select_from(UploadedFile))


def upload(client, data: bytes, name: str = "weights.safetensors", chunk: int = 8192):
    """Upload ``data`` streamed in chunks (chunked transfer coding, no length)."""

    def chunks():
        for start in range(0, len(data), chunk):
            yield data[start : start + chunk]

    return client.post("/v1/files", params={"name": name}, content=chunks(), headers=OCTETS)


def with_weights(weights: str) -> dict:
    return {**SPEC, "model": {"name": "mlp", "weights": weights}}


@pytest.mark.parametrize("live_settings", [{"max_upload_bytes": LIMIT}])
def test_an_upload_is_stored_whole_with_its_hash_and_listed_for_its_owner(live_server):
    data = bytes(range(256)) * 1000  # over the JSON body limit (64 KiB here)
    with live_server.client("alice") as alice:
        answer = upload(alice, data)
        assert answer.status_code == 201, answer.text
        info = answer.json()
        assert info["size"] == len(data) and info["name"] == "weights.safetensors"
        assert info["sha256"] == hashlib.sha256(data).hexdigest()
        assert info["reference"] == f"file:{info['id']}" and info["owner"] == "alice"
        assert alice.get(f"/v1/files/{info['id']}").json() == info
        second = alice.post(
            "/v1/files", params={"name": "b.pt"}, content=b"x" * 10, headers=OCTETS
        ).json()
        page = alice.get("/v1/files", params={"limit": 1}).json()
        assert [f["id"] for f in page["items"]] == [second["id"]]
        older = alice.get("/v1/files", params={"limit": 1, "cursor": page["next_cursor"]}).json()
        assert [f["id"] for f in older["items"]] == [info["id"]] and older["next_cursor"] is None
    with live_server.client("bob") as bob:
        assert bob.get("/v1/files").json()["items"] == []
    (path,) = [p for p in files_folder(live_server).iterdir() if p.stat().st_size == len(data)]
    assert path.read_bytes() == data


@pytest.mark.parametrize("live_settings", [{"max_upload_bytes": LIMIT}])
def test_an_upload_over_the_limit_is_413_and_leaves_nothing(live_server):
    data = b"w" * (LIMIT + 1)
    with live_server.client("alice") as alice:
        declared = alice.post("/v1/files", params={"name": "big"}, content=data, headers=OCTETS)
        assert declared.status_code == 413
        assert declared.json()["error"]["details"] == {"limit": LIMIT}
    with live_server.client("alice") as alice:
        streamed = upload(alice, data, chunk=16384)
        assert streamed.status_code == 413, streamed.text
        assert "SILO_MAX_UPLOAD_BYTES" in streamed.json()["error"]["message"]
    assert stored(live_server) == [] and rows(live_server) == 0
    with live_server.client("alice") as alice:  # exactly the limit is fine
        assert upload(alice, data[:LIMIT]).status_code == 201


def test_a_client_that_goes_away_mid_upload_leaves_nothing(live_server):
    head = (
        f"POST /v1/files?name=cut HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {live_server.tokens['alice']}\r\n"
        "Content-Type: application/octet-stream\r\nContent-Length: 10000000\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", live_server.port)) as sock:
        sock.sendall(head + b"a" * 3_000_000)
        deadline = time.monotonic() + 10
        while not any(name.endswith(".part") for name in stored(live_server)):
            assert time.monotonic() < deadline, "the upload never started"
            time.sleep(0.02)
    deadline = time.monotonic() + 10
    while stored(live_server):
        assert time.monotonic() < deadline, f"left behind: {stored(live_server)}"
        time.sleep(0.05)
    assert rows(live_server) == 0


def test_an_upload_must_be_octet_stream_and_named(live_server):
    with live_server.client("alice") as alice:
        wrong = alice.post("/v1/files", params={"name": "a"}, json={"a": 1})
        assert wrong.status_code == 415
        assert "application/octet-stream" in wrong.json()["error"]["message"]
        unnamed = alice.post("/v1/files", content=b"abc", headers=OCTETS)
        assert unnamed.status_code == 422 and "name" in unnamed.text
    assert stored(live_server) == []


@pytest.mark.parametrize("live_settings", [{"read_access": "owner"}])
def test_under_owner_access_another_users_file_is_404_and_cannot_be_named(live_server):
    with live_server.client("alice") as alice:
        file_id = upload(alice, b"alice's weights").json()["id"]
        own_job = alice.post("/v1/jobs", json={"spec": SPEC}).json()["id"]
    with live_server.client("bob") as bob:
        assert bob.get(f"/v1/files/{file_id}").status_code == 404
        assert bob.get(f"/v1/files/{file_id + 1000}").json() == {
            "error": {"code": "not_found", "message": "no such file", "details": None}
        }
        assert bob.delete(f"/v1/files/{file_id}").status_code == 404
        for weights in (f"file:{file_id}", f"job:{own_job}/model.pt"):
            refused = bob.post("/v1/jobs", json={"spec": with_weights(weights)})
            assert refused.status_code == 422, refused.text
            (detail,) = refused.json()["error"]["details"]
            assert detail["field"] == "spec.model.weights"
            assert "that you may read" in detail["message"]
    with live_server.client("root") as root:
        assert root.get(f"/v1/files/{file_id}").status_code == 200


@pytest.mark.parametrize("live_settings", [{"read_access": "team"}])
def test_under_team_access_every_user_reads_a_file_but_only_its_owner_deletes_it(live_server):
    with live_server.client("alice") as alice:
        file_id = upload(alice, b"team weights").json()["id"]
    with live_server.client("bob") as bob:
        assert bob.get(f"/v1/files/{file_id}").json()["owner"] == "alice"
        assert bob.delete(f"/v1/files/{file_id}").status_code == 403


def test_model_weights_must_name_a_file_or_artifact_the_api_knows(live_server):
    with live_server.client("alice") as alice:
        for weights, says in (
            ("/etc/passwd", "the service reads no path it is given"),
            ("file:999", "no uploaded file 999"),
            ("job:999/model.pt", "no job 999"),
        ):
            refused = alice.post("/v1/jobs", json={"spec": with_weights(weights)})
            assert refused.status_code == 422, refused.text
            (detail,) = refused.json()["error"]["details"]
            assert detail["field"] == "spec.model.weights" and says in detail["message"]
        job_id = alice.post("/v1/jobs", json={"spec": SPEC}).json()["id"]
        unfinished = alice.post("/v1/jobs", json={"spec": with_weights(f"job:{job_id}/model.pt")})
        assert unfinished.status_code == 422
        assert "has no artifact 'model.pt'" in unfinished.text
        no_weights = {**SPEC, "training": {**SPEC["training"], "dense": {"epochs": 0}}}
        refused = alice.post("/v1/jobs", json={"spec": no_weights})
        assert refused.status_code == 422
        assert "training.dense.epochs: 0" in refused.json()["error"]["message"]
        study = alice.post(
            "/v1/studies",
            json={"spec": with_weights("/etc/passwd"), "schedules": [{"name": "silo"}]},
        )
        assert study.status_code == 422 and "spec.model.weights" in study.text


def test_a_file_a_queued_job_starts_from_cannot_be_deleted(live_server):
    with live_server.client("alice") as alice:
        file_id = upload(alice, b"weights").json()["id"]
        job = alice.post("/v1/jobs", json={"spec": with_weights(f"file:{file_id}")})
        assert job.status_code == 201, job.text
        refused = alice.delete(f"/v1/files/{file_id}")
        assert refused.status_code == 409
        assert refused.json()["error"]["details"] == {"job_id": job.json()["id"]}
        assert alice.post(f"/v1/jobs/{job.json()['id']}/cancel").status_code == 200
        assert alice.delete(f"/v1/files/{file_id}").status_code == 204
        assert alice.get(f"/v1/files/{file_id}").status_code == 404
    assert stored(live_server) == [] and rows(live_server) == 0


def test_migration_0007_adds_the_files_table_and_takes_it_back(empty_database_url):
    from alembic import command
    from sqlalchemy import inspect

    from server.db.migrate import alembic_config, current_revision, upgrade
    from server.db.session import make_engine

    upgrade(empty_database_url, "0006")
    upgrade(empty_database_url, "0007")
    engine = make_engine(empty_database_url)
    assert current_revision(engine) == "0007"
    assert "files" in inspect(engine).get_table_names()
    command.downgrade(alembic_config(empty_database_url), "0006")
    engine.dispose()
    engine = make_engine(empty_database_url)
    assert current_revision(engine) == "0006"
    assert "files" not in inspect(engine).get_table_names()
    engine.dispose()
