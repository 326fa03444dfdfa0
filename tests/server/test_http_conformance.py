"""HTTP as RFC 9110 has it, through real uvicorn: media types, codings, HEAD,
OPTIONS, 405's Allow, headers sent twice, bodies parsed as standard JSON,
Connection: close after a 413 or a 500, and who may read /metrics."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from raw_http import request
from tiny_jobs import SPEC, sqlite_only

pytestmark = sqlite_only  # HTTP behaviour: the same whatever database is behind


def token(live_server, user: str = "alice") -> tuple[str, str]:
    return ("Authorization", f"Bearer {live_server.tokens[user]}")


def post_json(live_server, path: str, body: bytes, content_type: str = "application/json"):
    headers = [token(live_server), ("Content-Length", str(len(body)))]
    if content_type:
        headers.append(("Content-Type", content_type))
    return request(live_server.port, "POST", path, headers, body)


def test_a_body_must_be_json_in_utf8_without_a_content_coding(live_server):
    body = json.dumps({"spec": SPEC}).encode()
    for content_type in (
        "",
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/json; charset=latin-1",
    ):
        response = post_json(live_server, "/v1/jobs", body, content_type)
        assert response.status_code == 415, content_type
        assert response.json()["error"]["code"] == "unsupported_media_type"
        assert "application/json" in response.json()["error"]["message"]
    for content_type in (
        "application/json",
        "application/json; charset=utf-8",
        "application/merge-patch+json",
    ):
        assert post_json(live_server, "/v1/jobs", body, content_type).status_code == 201

    gzipped = request(
        live_server.port,
        "POST",
        "/v1/jobs",
        [
            token(live_server),
            ("Content-Type", "application/json"),
            ("Content-Encoding", "gzip"),
            ("Content-Length", str(len(body))),
        ],
        body,
    )
    assert gzipped.status_code == 415
    assert gzipped.headers["accept-encoding"] == "identity"
    assert gzipped.json()["error"]["code"] == "unsupported_encoding"

    # A transfer coding the server cannot undo (gzip over chunked): 501.
    chunked = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    coded = request(
        live_server.port,
        "POST",
        "/v1/jobs",
        [
            token(live_server),
            ("Content-Type", "application/json"),
            ("Transfer-Encoding", "gzip, chunked"),
        ],
        chunked,
    )
    assert coded.status_code in (400, 501)  # the HTTP layer may refuse it first
    with live_server.client() as client:
        assert client.get("/v1/jobs").json()["items"].__len__() == 3  # only the three above


def test_malformed_json_names_the_body_and_where(live_server):
    cases = {
        b'{"spec": {': "line 1, column 11",
        b'{"spec": NaN}': "NaN is not a JSON number",
        b'{"spec": {}, "priority": Infinity}': "Infinity is not a JSON number",
        b'{"spec": {}, "priority": 1e999}': "out of range",
        b'{"spec": {}, "spec": {}}': "the key 'spec' appears twice",
        b'\xff{"spec": {}}': "not UTF-8",
        b"[" * 100 + b"]" * 100: "nested deeper than 64 levels",
    }
    for body, fragment in cases.items():
        response = post_json(live_server, "/v1/jobs", body)
        assert response.status_code == 400, body
        error = response.json()["error"]
        assert error["code"] == "invalid_json"
        assert error["details"] == [{"field": "body", "message": error["details"][0]["message"]}]
        assert error["message"].startswith("body: not valid JSON: ")
        assert fragment in error["message"], (body, error["message"])


def test_nul_and_lone_surrogates_never_reach_the_database(live_server):
    """Refused wherever they come from, naming where: a body string or key, a
    query or path parameter, a header."""
    in_body = {
        '{"spec": {"model": {"name": "m\\u0000lp"}}}': "spec.model.name",
        '{"spec": {}, "name": "a\\u0000b"}': "name",
        '{"spec": {}, "tags": ["a\\u0000"]}': "tags[0]",
        '{"spec": {"\\u0000": 1}}': "spec.\\u0000",  # a NUL is never sent back
        '{"spec": {}, "name": "\\ud800"}': "name",
    }
    for body, field in in_body.items():
        response = post_json(live_server, "/v1/jobs", body.encode())
        assert response.status_code == 422, body
        assert response.json()["error"]["details"][0]["field"] == field
    with live_server.client() as client:
        for path, field in (
            ("/v1/jobs?owner=a%00b", "owner"),
            ("/v1/jobs?tag=%00", "tag"),
            ("/v1/jobs?cursor=%00", "cursor"),
            ("/v1/jobs/1/artifacts/model%00.pt", "name"),
        ):
            response = client.get(path)
            assert response.status_code == 422, path
            assert response.json()["error"]["details"][0]["field"] == field
        assert client.get("/v1/jobs").json()["items"] == []
    nul_header = request(
        live_server.port,
        "POST",
        "/v1/jobs",
        [
            token(live_server),
            ("Content-Type", "application/json"),
            ("Idempotency-Key", "a\x00b"),
            ("Content-Length", "2"),
        ],
        b"{}",
    )
    assert nul_header.status_code == 400


def test_a_header_that_carries_one_value_must_come_once(live_server):
    alice, bob = token(live_server), token(live_server, "bob")
    twice = request(live_server.port, "GET", "/v1/jobs", [alice, bob])
    assert twice.status_code == 400
    assert twice.json()["error"]["details"] == [
        {"field": "Authorization", "message": "sent more than once"}
    ]
    body = json.dumps({"spec": SPEC}).encode()
    keys = request(
        live_server.port,
        "POST",
        "/v1/jobs",
        [
            alice,
            ("Content-Type", "application/json"),
            ("Idempotency-Key", "a"),
            ("Idempotency-Key", "b"),
            ("Content-Length", str(len(body))),
        ],
        body,
    )
    assert keys.status_code == 400
    assert "Idempotency-Key" in keys.json()["error"]["message"]


def test_head_answers_every_get_like_get_without_a_body(live_server):
    with live_server.client() as client:
        job_id = client.post("/v1/jobs", json={"spec": SPEC}).json()["id"]
        paths = [
            "/healthz",
            "/v1/jobs",
            f"/v1/jobs/{job_id}",
            f"/v1/jobs/{job_id}/cycles",
            f"/v1/jobs/{job_id}/events",
            f"/v1/jobs/{job_id}/artifacts",
            f"/v1/jobs/{job_id}/logs",
            "/v1/studies",
            "/v1/jobs/999999",
        ]
        for path in paths:
            get, head = client.get(path), client.head(path)
            assert head.status_code == get.status_code, path
            assert head.content == b""
            assert head.headers["content-type"] == get.headers["content-type"]
        # A stream (the job is queued: it would run until the job ends) answers
        # its headers and ends, and gives its stream slot back.
        for path in (f"/v1/jobs/{job_id}/events/stream", f"/v1/jobs/{job_id}/logs?follow=true"):
            head = client.head(path, timeout=5)
            assert head.status_code == 200 and head.content == b""
        watcher = live_server.app.state.watcher
        deadline = time.monotonic() + 5
        while watcher.open_streams() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert watcher.open_streams() == 0
        assert client.head("/v1/jobs/1/cancel").status_code == 405


def test_options_and_405_list_the_methods_the_path_has(live_server):
    with live_server.client() as client:
        for path, allowed in (
            ("/v1/jobs", "GET, HEAD, OPTIONS, POST"),
            ("/v1/jobs/7", "GET, HEAD, OPTIONS"),
            ("/v1/jobs/7/cancel", "OPTIONS, POST"),
            ("/v1/studies", "GET, HEAD, OPTIONS, POST"),
        ):
            options = client.options(path)
            assert options.status_code == 204, path
            assert options.headers["allow"] == allowed
            wrong = client.delete(path)
            assert wrong.status_code == 405
            assert wrong.headers["allow"] == allowed
            assert wrong.json()["error"]["code"] == "method_not_allowed"
        assert client.options("/v1/no-such-thing").status_code == 404


def test_a_413_closes_the_connection_instead_of_reading_on(live_server):
    """The test server limits bodies to 64 KiB; a chunked body past it is refused
    after the limit, and the connection is closed rather than drained."""
    chunk = b"x" * 8192
    body = b"".join(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n" for _ in range(9))
    headers = [
        token(live_server),
        ("Content-Type", "application/json"),
        ("Transfer-Encoding", "chunked"),
    ]
    response = request(live_server.port, "POST", "/v1/jobs", headers, body + b"0\r\n\r\n")
    assert response.status_code == 413
    assert response.headers["connection"] == "close"
    assert response.closed
    declared = request(
        live_server.port,
        "POST",
        "/v1/jobs",
        [
            token(live_server),
            ("Content-Type", "application/json"),
            ("Content-Length", str(1 << 30)),
        ],
    )
    assert declared.status_code == 413 and declared.closed


@pytest.fixture
def failing_route_server(live_server):
    """The live app with one route that fails unexpectedly, as a bug would."""

    @live_server.app.get("/v1/test-failure", include_in_schema=False)
    def fail() -> None:
        raise RuntimeError("a bug")

    return live_server


def test_after_a_500_the_server_closes_the_connection(failing_route_server):
    response = request(failing_route_server.port, "GET", "/v1/test-failure")
    assert response.status_code == 500
    assert response.json() == {
        "error": {"code": "internal_error", "message": "internal server error", "details": None}
    }
    assert response.headers["connection"] == "close"
    assert response.closed


@pytest.mark.parametrize("access", ["open", "user", "admin"])
def test_metrics_access_follows_the_setting(live_server, access):
    live_server.app.state.settings = live_server.app.state.settings.model_copy(
        update={"metrics_access": access}
    )
    expected = {
        "open": {None: 200, "alice": 200, "root": 200},
        "user": {None: 401, "alice": 200, "root": 200},
        "admin": {None: 401, "alice": 403, "root": 200},
    }[access]
    for user, status in expected.items():
        headers = {"Authorization": f"Bearer {live_server.tokens[user]}"} if user else {}
        response = httpx.get(live_server.base_url + "/metrics", headers=headers)
        assert response.status_code == status, (access, user)
        if status == 200:
            assert "silo_jobs" in response.text
