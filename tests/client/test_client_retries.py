"""Retries against a real HTTP server in front of the API: 503 + Retry-After, refused
connections, and the errors that must not be retried."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import pairwise

import httpx
import pytest
from tiny_jobs import SPEC, sqlite_only

from silo_client import SiloApiError, SiloClient, SiloConnectionError, SiloError

Answer = tuple[int, dict[str, str], bytes]

UNAVAILABLE: Answer = (
    503,
    {"Retry-After": "1", "Content-Type": "application/json"},
    json.dumps({"error": {"code": "database_unavailable", "message": "retry shortly"}}).encode(),
)
FORWARDED = ("Authorization", "Content-Type", "Idempotency-Key")


class Upstream:
    """An HTTP server that gives its scripted answers first, then forwards every
    request to ``target`` (the live API) or answers 500 without one."""

    def __init__(self, script: list[Answer], target: str | None = None) -> None:
        self.script, self.target = list(script), target
        self.seen: list[tuple[float, str, str, dict[str, str]]] = []
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                upstream.seen.append(
                    (time.monotonic(), self.command, self.path, dict(self.headers.items()))
                )
                status, headers, content = upstream.answer(self.command, self.path, self, body)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            do_GET = do_POST = _answer

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def answer(self, method, path, request, body) -> Answer:
        if self.script:
            return self.script.pop(0)
        if self.target is None:
            return 500, {}, b"no answer scripted"
        headers = {k: request.headers[k] for k in FORWARDED if k in request.headers}
        response = httpx.request(method, self.target + path, headers=headers, content=body)
        return (
            response.status_code,
            {"Content-Type": response.headers["content-type"]},
            response.content,
        )

    def __enter__(self) -> Upstream:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def quiet_port() -> Iterator[int]:
    """A port where nothing listens (bound, never listening: connections are refused)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@sqlite_only
def test_a_503_is_retried_after_its_retry_after(live_server, api):
    job = api.submit(SPEC)
    token = live_server.tokens["alice"]
    with (
        Upstream([UNAVAILABLE, UNAVAILABLE], target=live_server.base_url) as upstream,
        SiloClient(upstream.url, token, retries=3) as client,
    ):
        assert client.get(job.id) == api.get(job.id)
    times = [seen[0] for seen in upstream.seen]
    assert len(times) == 3
    assert all(later - earlier >= 0.95 for earlier, later in pairwise(times))


@sqlite_only
def test_a_retried_submit_queues_one_job(live_server, api):
    token = live_server.tokens["alice"]
    with (
        Upstream([UNAVAILABLE], target=live_server.base_url) as upstream,
        SiloClient(upstream.url, token, retries=2) as client,
    ):
        job = client.submit(SPEC)
    keys = [seen[3]["Idempotency-Key"] for seen in upstream.seen]
    assert len(keys) == 2 and keys[0] == keys[1]  # the same key: a repeat is not a new job
    assert [j.id for j in api.jobs()] == [job.id]


def test_retry_after_is_capped_by_max_wait():
    hour = (503, {"Retry-After": "3600"}, b"{}")
    page = (200, {"Content-Type": "application/json"}, b'{"items": [], "next_cursor": null}')
    with (
        Upstream([hour, hour, page]) as upstream,
        SiloClient(upstream.url, "t", retries=2, max_wait=0.1) as client,
    ):
        started = time.monotonic()
        assert list(client.studies()) == []
    assert time.monotonic() - started < 2
    assert len(upstream.seen) == 3


def test_a_503_past_the_retries_raises_it():
    with (
        Upstream([UNAVAILABLE] * 3) as upstream,
        SiloClient(upstream.url, "t", retries=2, max_wait=0.01) as client,
        pytest.raises(SiloApiError) as caught,
    ):
        client.get(1)
    assert (caught.value.status, caught.value.code) == (503, "database_unavailable")
    assert len(upstream.seen) == 3


def test_an_upload_answered_503_is_raised_not_sent_again(tmp_path):
    """The server read the streamed file before it answered: a retry would send
    nothing, so the 503 reaches the caller."""
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"x" * 300_000)
    with (
        Upstream([UNAVAILABLE] * 3) as upstream,
        SiloClient(upstream.url, "t", retries=2, max_wait=0.01) as client,
        pytest.raises(SiloApiError) as caught,
    ):
        client.upload(weights)
    assert (caught.value.status, caught.value.code) == (503, "database_unavailable")
    assert len(upstream.seen) == 1


def test_a_404_is_not_retried():
    body = json.dumps({"error": {"code": "not_found", "message": "no such job"}}).encode()
    with (
        Upstream([(404, {"Content-Type": "application/json"}, body)]) as upstream,
        SiloClient(upstream.url, "t", retries=3) as client,
        pytest.raises(SiloApiError) as caught,
    ):
        client.get(1)
    assert caught.value.status == 404
    assert len(upstream.seen) == 1


def test_an_error_page_not_from_the_api_keeps_its_status_and_reason():
    page = (502, {"Content-Type": "text/html"}, b"<html>bad gateway</html>")
    with (
        Upstream([page]) as upstream,
        SiloClient(upstream.url, "t") as client,
        pytest.raises(SiloApiError) as caught,
    ):
        client.get(1)
    assert str(caught.value) == "Bad Gateway [HTTP 502 http_error]"


@sqlite_only
def test_a_refused_connection_is_retried_until_the_server_is_back(live_server, api):
    job = api.submit(SPEC)
    live_server.stop()
    restart = threading.Timer(0.5, live_server.start)
    restart.start()
    try:
        with SiloClient(
            live_server.base_url, live_server.tokens["alice"], retries=6, backoff=0.2
        ) as client:
            assert client.get(job.id).id == job.id
    finally:
        restart.join()


def test_an_unreachable_server_raises_a_connection_error_naming_it(quiet_port):
    url = f"http://127.0.0.1:{quiet_port}"
    with (
        SiloClient(url, "t", retries=2, backoff=0.01) as client,
        pytest.raises(SiloConnectionError) as caught,
    ):
        client.get(1)
    assert str(caught.value).startswith(f"cannot reach {url}")


def test_an_answer_that_is_not_the_api_s_raises_a_silo_error():
    stranger = (200, {"Content-Type": "application/json"}, b'{"items": 3}')
    with (
        Upstream([stranger]) as upstream,
        SiloClient(upstream.url, "t") as client,
        pytest.raises(SiloError) as caught,
    ):
        list(client.studies())
    assert str(caught.value).startswith(f"unexpected answer from {upstream.url}/v1/studies: items")
