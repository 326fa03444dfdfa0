"""The OpenAPI document guards whole families of bad input: a new route or field
that forgets a bound, an error answer or its token fails here, before any fuzzer
has to find it."""

from __future__ import annotations

import re
from typing import Any

import pytest
from tiny_jobs import sqlite_only

from server.app import create_app
from server.settings import Settings
from silo_contract.fields import MAX_ID

REFS = "#/components/schemas/"


@pytest.fixture(scope="module")
def document(tmp_path_factory) -> dict[str, Any]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("openapi"))
    return create_app(settings).openapi()


def operations(document: dict[str, Any]):
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            yield path, method, operation


def schemas_under(document: dict[str, Any], schema: Any, seen: set[str] | None = None):
    """Every schema object reachable from ``schema``, following $refs once each."""
    seen = set() if seen is None else seen
    if isinstance(schema, list):
        for item in schema:
            yield from schemas_under(document, item, seen)
        return
    if not isinstance(schema, dict):
        return
    ref = schema.get("$ref")
    if ref is not None:
        if ref not in seen:
            seen.add(ref)
            yield from schemas_under(
                document, document["components"]["schemas"][ref.removeprefix(REFS)], seen
            )
        return
    yield schema
    for value in schema.values():
        yield from schemas_under(document, value, seen)


def request_schemas(document: dict[str, Any]):
    """(where, schema) for every schema a request can carry."""
    for path, method, operation in operations(document):
        for parameter in operation.get("parameters", []):
            for schema in schemas_under(document, parameter["schema"]):
                yield f"{method.upper()} {path} {parameter['name']}", schema
        body = operation.get("requestBody", {}).get("content", {}).get("application/json")
        if body:
            for schema in schemas_under(document, body["schema"]):
                yield f"{method.upper()} {path} body", schema


def test_every_integer_a_request_carries_is_bounded_exactly(document):
    for where, schema in request_schemas(document):
        if schema.get("type") == "integer":
            assert "minimum" in schema and "maximum" in schema, (where, schema)
            assert type(schema["maximum"]) is int and schema["maximum"] <= MAX_ID, (where, schema)
        # Constraints pydantic could not place in a schema would show under their own names.
        assert not {"ge", "le", "gt", "lt"} & schema.keys(), (where, schema)


def test_every_string_a_request_carries_says_it_holds_no_nul(document):
    for where, schema in request_schemas(document):
        if schema.get("type") == "string" and not {"enum", "const", "format"} & schema.keys():
            # The NUL rule itself, or a stricter pattern (tags, names, cursors, devices).
            assert schema.get("pattern"), (where, schema)
        if schema.get("type") == "object" and schema.get("additionalProperties") is not False:
            assert schema.get("propertyNames", {}).get("pattern"), (where, schema)


def test_every_route_says_who_may_call_it_and_every_error_it_answers(document):
    assert set(document["components"]["securitySchemes"]) == {"UserToken", "AttemptToken"}
    for path, method, operation in operations(document):
        if not path.startswith("/v1/"):
            continue
        where = f"{method.upper()} {path}"
        scheme = "AttemptToken" if "/attempts/" in path else "UserToken"
        assert operation.get("security") == [{scheme: []}], where
        statuses = set(operation["responses"])
        assert {"400", "401", "422", "503"} <= statuses, where
        if "requestBody" in operation:
            assert {"413", "415"} <= statuses, where
        parameters = operation.get("parameters", [])
        if scheme == "UserToken" and any(p["in"] == "path" for p in parameters):
            assert "404" in statuses, where  # (an attempt token names its own job: 401/403)
        for status, answer in operation["responses"].items():
            if status.startswith(("4", "5")):
                schema = answer["content"]["application/json"]["schema"]
                assert schema == {"$ref": REFS + "ErrorOut"}, (where, status)
        assert "500" not in statuses, where


def test_a_submit_is_declared_as_the_job_spec(document):
    schemas = document["components"]["schemas"]
    assert schemas["JobSubmit"]["properties"]["spec"]["$ref"] == REFS + "JobSpec"
    assert schemas["StudySubmit"]["properties"]["spec"]["$ref"] == REFS + "StudyBaseSpec"
    assert "schedule" in schemas["JobSpec"]["required"]
    assert "schedule" not in schemas["StudyBaseSpec"]["required"]
    assert "oneOf" in schemas["StudySubmit"]["properties"]["schedules"]["items"]


@sqlite_only
def test_the_submit_examples_are_accepted_and_weights_are_references(live_server):
    with live_server.client("alice") as alice:
        schemas = alice.get("/openapi.json").json()["components"]["schemas"]
        (job,) = schemas["JobSubmit"]["examples"]
        (study,) = schemas["StudySubmit"]["examples"]
        assert alice.post("/v1/jobs", json=job).status_code == 201
        assert alice.post("/v1/studies", json=study).status_code == 201
        weights = schemas["ModelSpec"]["properties"]["weights"]["anyOf"][0]["pattern"]
        for reference in ("file:7", "job:12/model.safetensors"):
            assert re.fullmatch(weights, reference), reference
        # A path (which only `silo run` reads) is outside the pattern, and refused.
        assert not re.fullmatch(weights, "/etc/passwd")
        job["spec"]["model"]["weights"] = "/etc/passwd"
        refused = alice.post("/v1/jobs", json=job)
        assert refused.status_code == 422
        assert refused.json()["error"]["details"][0]["field"] == "spec.model.weights"
