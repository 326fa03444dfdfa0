"""Plug-in jobs end to end: the real API, the dispatcher and a local Ray whose
workers have the tests' plug-in packages on their path (tests/plugin_dists.py)."""

from __future__ import annotations

import pytest
from plugin_dists import BROKEN, BROKEN_VERSION, TEAM, TEAM_SPEC, TEAM_VERSION
from tiny_jobs import finished, sqlite_only, wait_for


@sqlite_only
@pytest.mark.usefixtures("team_plugins", "dispatching")
def test_a_job_on_a_plugin_model_and_data_set_runs_to_success(live_server):
    with live_server.client() as client:
        models = client.get("/v1/catalog").json()["models"]
        assert {
            "name": "team_mlp",
            "origin": {"source": "plugin", "distribution": TEAM, "version": TEAM_VERSION},
        } in models
        submitted = client.post("/v1/jobs", json={"spec": TEAM_SPEC})
        assert submitted.status_code == 201, submitted.text
        job = wait_for(client, submitted.json()["id"], finished)
        assert job["status"] == "succeeded", job["error_message"]
        cycles = client.get(f"/v1/jobs/{job['id']}/cycles").json()["items"]
    assert [round(row["sparsity"], 2) for row in cycles] == [0.0, 0.5]
    # Two well-separated blobs: the team's network really learnt the team's data.
    assert cycles[0]["test_accuracy_at_best_val"] > 0.9


@sqlite_only
@pytest.mark.usefixtures("team_plugins", "dispatching")
def test_a_plugin_failing_at_import_fails_its_job_alone(live_server):
    with live_server.client() as client:
        broken = client.post(
            "/v1/jobs", json={"spec": {**TEAM_SPEC, "model": {"name": "broken_net"}}}
        ).json()["id"]
        after = client.post("/v1/jobs", json={"spec": TEAM_SPEC}).json()["id"]
        failed = wait_for(client, broken, finished)
        assert failed["status"] == "failed"
        message = failed["error_message"]
        assert message.startswith("PluginError: plug-in model 'broken_net'")
        assert "broken_net = silo_broken_plugin:build" in message
        assert f"distribution {BROKEN} {BROKEN_VERSION}" in message
        assert "this plug-in is broken on purpose" in message
        log = client.get(f"/v1/jobs/{broken}/logs").text
        assert "Traceback (most recent call last)" in log
        assert 'silo_broken_plugin/__init__.py", line 1' in log
        # The dispatcher and the API go on: the next job runs to success.
        assert wait_for(client, after, finished)["status"] == "succeeded"
        assert client.get("/healthz").status_code == 200
