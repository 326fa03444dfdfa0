"""SILO_READ_ACCESS, through real HTTP on both databases: under ``team`` every
user reads every job and study (changing one stays its owner's); under
``owner`` another user's job, study, log, events and artifacts are 404 exactly
as a missing one's, lists hold one's own only, and admins read everything."""

from __future__ import annotations

import hashlib

import pytest
from tiny_jobs import SPEC

from server.db.models import Artifact
from server.db.session import make_engine, make_session_factory
from silo_contract.layout import attempt_log, output_folder

STUDY = {"spec": SPEC, "schedules": [{"name": "silo"}], "seeds": [0]}


def alices_job_and_study(live_server) -> tuple[int, int]:
    """A job of alice's with a log line and an artifact, and a study of hers."""
    with live_server.client("alice") as alice:
        job_id = alice.post("/v1/jobs", json={"spec": SPEC}).json()["id"]
        study_id = alice.post("/v1/studies", json=STUDY).json()["id"]
    root = live_server.app.state.settings.resolved_artifact_root()
    log = attempt_log(root, job_id, 1)
    log.parent.mkdir(parents=True)
    log.write_text("alice's secret line\n")
    weights = output_folder(root, job_id) / "model.pt"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"alice's weights")
    engine = make_engine(live_server.database_url)
    with make_session_factory(engine).begin() as session:
        from server.db.models import Job

        session.get(Job, job_id).attempt = 1
        session.add(
            Artifact(
                job_id=job_id,
                attempt=1,
                name="model.pt",
                size=15,
                checksum=hashlib.sha256(b"alice's weights").hexdigest(),
                location=str(weights),
            )
        )
    engine.dispose()
    return job_id, study_id


def reads(job_id: int, study_id: int) -> list[str]:
    return [
        f"/v1/jobs/{job_id}",
        f"/v1/jobs/{job_id}/cycles",
        f"/v1/jobs/{job_id}/events",
        f"/v1/jobs/{job_id}/events/stream?after=0",
        f"/v1/jobs/{job_id}/logs",
        f"/v1/jobs/{job_id}/artifacts",
        f"/v1/jobs/{job_id}/artifacts/model.pt",
        f"/v1/studies/{study_id}",
    ]


def listed(client, path: str) -> set[int]:
    return {item["id"] for item in client.get(path).json()["items"]}


def test_team_reads_everything_and_changes_only_its_own(live_server):
    job_id, study_id = alices_job_and_study(live_server)
    with live_server.client("bob") as bob:
        bob.post("/v1/jobs", json={"spec": SPEC})
        for path in reads(job_id, study_id):
            if path.endswith("/stream?after=0"):
                continue  # a queued job's stream stays open; its 404 is tested below
            assert bob.get(path).status_code == 200, path
        assert "alice's secret line" in bob.get(f"/v1/jobs/{job_id}/logs").text
        assert bob.get(f"/v1/jobs/{job_id}/artifacts/model.pt").content == b"alice's weights"
        assert job_id in listed(bob, "/v1/jobs") and study_id in listed(bob, "/v1/studies")
        cancel = bob.post(f"/v1/jobs/{job_id}/cancel")
        assert cancel.status_code == 403
        assert cancel.json()["error"]["code"] == "forbidden"


@pytest.mark.parametrize("live_settings", [{"read_access": "owner"}])
def test_owner_makes_others_jobs_invisible_except_to_admins(live_server):
    job_id, study_id = alices_job_and_study(live_server)
    with live_server.client("bob") as bob:
        own_job = bob.post("/v1/jobs", json={"spec": SPEC}).json()["id"]
        own_study = bob.post("/v1/studies", json=STUDY).json()["id"]
        missing = bob.get("/v1/jobs/999999").json()
        for path in reads(job_id, study_id):
            response = bob.get(path)
            assert response.status_code == 404, path
            # The same answer as for a job that does not exist: ids reveal nothing.
            what = "study" if "studies" in path else "job"
            assert response.json() == {
                **missing,
                "error": {**missing["error"], "message": f"no such {what}"},
            }
        for action in ("cancel", "retry"):
            assert bob.post(f"/v1/jobs/{job_id}/{action}").status_code == 404
        assert bob.head(f"/v1/jobs/{job_id}").status_code == 404
        jobs, studies = listed(bob, "/v1/jobs"), listed(bob, "/v1/studies")
        # Bob's study made a member job; alice's job and her study's member are not his.
        assert own_job in jobs and job_id not in jobs
        assert all(item["owner"] == "bob" for item in bob.get("/v1/jobs").json()["items"])
        assert studies == {own_study}
        assert listed(bob, "/v1/jobs?owner=alice") == set()
    with live_server.client("alice") as alice:
        assert alice.get(f"/v1/jobs/{job_id}/logs").status_code == 200
        assert own_job not in listed(alice, "/v1/jobs")
    with live_server.client("root") as root:
        for path in reads(job_id, study_id):
            if path.endswith("/stream?after=0"):
                continue
            assert root.get(path).status_code == 200, path
        assert {job_id, own_job} <= listed(root, "/v1/jobs")
        assert {study_id, own_study} <= listed(root, "/v1/studies")
