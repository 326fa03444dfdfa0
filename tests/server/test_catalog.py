"""GET /v1/catalog and plug-in names at submit, through the real HTTP API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from plugin_dists import TEAM, TEAM_SPEC, TEAM_VERSION
from tiny_jobs import sqlite_only

from silo_client.client import SiloClient
from silo_core.catalog import schedule_names
from silo_core.presets import preset_names

TEAM_ORIGIN = {"source": "plugin", "distribution": TEAM, "version": TEAM_VERSION}
BUILTIN = {"source": "builtin"}


@sqlite_only
@pytest.mark.usefixtures("team_plugins")
def test_the_catalog_lists_builtins_and_plugins_with_their_origin(live_server):
    with live_server.client() as client:
        response = client.get("/v1/catalog")
    assert response.status_code == 200, response.text
    found = response.json()
    assert set(found) == {"models", "datasets", "pruning_methods", "schedules", "presets"}
    assert {"name": "team_mlp", "origin": TEAM_ORIGIN} in found["models"]
    assert {"name": "resnet20", "origin": BUILTIN} in found["models"]
    assert {"name": "team_blobs", "origin": TEAM_ORIGIN} in found["datasets"]
    assert {"name": "digits", "origin": BUILTIN} in found["datasets"]
    assert {"name": "team_largest", "origin": TEAM_ORIGIN} in found["pruning_methods"]
    assert [item["name"] for item in found["schedules"]] == schedule_names()
    assert "silo" in schedule_names() and "oracle" in schedule_names()
    assert [item["name"] for item in found["presets"]] == preset_names()

    with SiloClient(live_server.base_url, live_server.tokens["bob"]) as client:
        listed = client.catalog()
    assert [m.name for m in listed.models] == [m["name"] for m in found["models"]]

    with live_server.client(None) as anonymous:
        refused = anonymous.get("/v1/catalog")
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "unauthenticated"


@sqlite_only
@pytest.mark.usefixtures("team_plugins")
def test_a_plugin_name_is_accepted_and_an_unknown_one_is_a_422_listing_the_names(live_server):
    with live_server.client() as client:
        accepted = client.post("/v1/jobs", json={"spec": TEAM_SPEC})
        assert accepted.status_code == 201, accepted.text
        for field, spec in (
            ("spec.model.name", {**TEAM_SPEC, "model": {"name": "team_mpl"}}),
            ("spec.dataset.name", {**TEAM_SPEC, "dataset": {"name": "team_blbos"}}),
        ):
            response = client.post("/v1/jobs", json={"spec": spec})
            assert response.status_code == 422, response.text
            error = response.json()["error"]
            assert error["code"] == "invalid_spec"
            assert error["details"][0]["field"] == field
            message = error["details"][0]["message"]
            assert "allowed: " in message
            for name in ("team_mlp", "mlp") if "model" in field else ("team_blobs", "digits"):
                assert name in message
        assert [job["id"] for job in client.get("/v1/jobs").json()["items"]] == [
            accepted.json()["id"]
        ]
        # The document lists the names installed when it was made.
        schemas = client.get("/openapi.json").json()["components"]["schemas"]
    assert "team_mlp" in schemas["ModelSpec"]["properties"]["name"]["enum"]
    assert "team_blobs" in schemas["DatasetSpec"]["properties"]["name"]["enum"]


def test_the_api_checks_and_lists_plugins_without_importing_them_or_torch(team_plugins):
    # A fresh interpreter with the API's modules: checking a spec and answering
    # the catalog must come from the distributions' metadata alone.
    program = textwrap.dedent(
        f"""
        import json, sys
        import server.app
        from server.api.catalog import read_catalog
        from silo_core.spec import parse_spec
        parse_spec({TEAM_SPEC!r})
        names = [item.name for item in read_catalog().models]
        loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("silo_team"))
        print(json.dumps({{"names": names, "loaded": loaded}}))
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(team_plugins), os.getcwd()])}
    done = subprocess.run(
        [sys.executable, "-c", program], env=env, capture_output=True, text=True, check=True
    )
    report = json.loads(done.stdout)
    assert "team_mlp" in report["names"]
    assert report["loaded"] == []
