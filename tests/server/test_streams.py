"""Event streams and followed logs through real HTTP: they hold no database
connection while they wait, still deliver within about a second, end with the
job, and each user holds a bounded number of them."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import sessionmaker
from tiny_jobs import sqlite_only

from server.api.errors import ApiError
from server.api.follow import JobWatcher
from server.api.logs import STOPPING
from server.db.models import Job, User
from server.db.session import make_engine, make_session_factory
from server.jobs.attempts import settle_lost_attempt, start_attempt
from silo_contract.layout import attempt_log
from silo_contract.reports import EpochEvent

# More than SQLite's default pool (5 + 10 overflow) and the PostgreSQL pool
# the server is given below (2 + 2 overflow): followed logs alone exceed both.
JOBS = 10
LOGS_PER_JOB = 2
EVENT_STREAMS_PER_JOB = 2
MANY = {"max_streams_per_user": 100, "database_pool_size": 2}


class RawStream:
    """One streamed GET on its own socket, read without threads: the test asks
    for text with a deadline, and closing the socket is the client going away."""

    def __init__(self, port: int, path: str, token: str, *, timeout: float = 10) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        head = f"GET {path} HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {token}\r\n\r\n"
        self.sock.sendall(head.encode())
        self._raw = b""
        self.body = b""
        self.ended = False  # the last chunk arrived
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self._raw:
            if not self._fill(deadline):
                raise TimeoutError(f"no response head to GET {path} in {timeout} s")
        head_bytes, _, self._raw = self._raw.partition(b"\r\n\r\n")
        lines = head_bytes.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()
        self.chunked = self.headers.get("transfer-encoding") == "chunked"
        if not self.chunked:  # an error: its JSON body, whole
            length = int(self.headers.get("content-length", "0"))
            while len(self._raw) < length and self._fill(deadline):
                pass
            self.body, self.ended = self._raw[:length], True
        self._decode()

    def json(self) -> dict:
        return json.loads(self.body)

    def _fill(self, deadline: float) -> bool:
        """Read once; False when the deadline passed or the server closed."""
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return False
        self._raw += data
        return bool(data)

    def _decode(self) -> None:
        while self.chunked and not self.ended:
            size_line, sep, rest = self._raw.partition(b"\r\n")
            if not sep:
                return
            size = int(size_line.split(b";")[0], 16)
            if len(rest) < size + 2:
                return
            self.body += rest[:size]
            self._raw = rest[size + 2 :]
            self.ended = size == 0

    def wait_for(self, text: bytes, timeout: float) -> bool:
        """True once ``text`` is in the body, False after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while text not in self.body:
            if self.ended or not self._fill(deadline):
                return text in self.body
            self._decode()
        return True

    def wait_end(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self.ended and self._fill(deadline):
            self._decode()
        return self.ended

    def close(self) -> None:
        with contextlib.suppress(OSError):  # already closed by the server
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


@pytest.fixture
def db(live_server) -> Iterator[sessionmaker]:
    engine = make_engine(live_server.database_url)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture
def opened(live_server) -> Iterator:
    """Opens streams on the live server; whatever a test leaves open is closed
    before the server stops (an open stream would keep it from stopping)."""
    streams: list[RawStream] = []

    def open_stream(path: str, user: str = "alice") -> RawStream:
        stream = RawStream(live_server.port, path, live_server.tokens[user])
        streams.append(stream)
        return stream

    yield open_stream
    for stream in streams:
        stream.close()


def user_id(db: sessionmaker, name: str) -> int:
    with db() as session:
        return session.scalar(select(User.id).where(User.name == name))


def running_job(db: sessionmaker, root: str, owner: str = "alice") -> tuple[int, str]:
    """A job started as the dispatcher starts one, with a first log line; its
    id and the attempt's token."""
    with db.begin() as session:
        job = Job(owner_id=user_id(db, owner), spec={}, spec_hash="x", status="queued")
        session.add(job)
        session.flush()
        job_id = job.id
        _, token = start_attempt(session, job_id)
    append(attempt_log(root, job_id, 1), "starting\n")
    return job_id, token


def append(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        handle.write(text)


def artifact_root(live_server) -> str:
    return live_server.app.state.settings.resolved_artifact_root()


def worker(live_server, token: str) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"}
    return httpx.Client(base_url=live_server.base_url, headers=headers, timeout=10)


def epoch(number: int) -> dict:
    return EpochEvent(
        cycle=0,
        epoch=number,
        epochs=4,
        cycles=1,
        lr=0.01,
        max_lr=0.1,
        train_loss=1.0,
        train_accuracy=0.6,
        val_loss=1.1,
        val_accuracy=0.5,
        sparsity=0.0,
        seconds=1.5,
    ).to_dict()


def eventually(condition, timeout: float = 5) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


# --- streams and the connection pool ------------------------------------------------


@pytest.mark.parametrize("live_settings", [MANY])
def test_status_polls_answer_while_more_streams_are_open_than_the_pool_holds(
    live_server, db, opened
):
    root = artifact_root(live_server)
    jobs = [running_job(db, root)[0] for _ in range(JOBS)]
    streams = []
    for job_id in jobs:
        for _ in range(LOGS_PER_JOB):
            streams.append(opened(f"/v1/jobs/{job_id}/logs?follow=true"))
        for _ in range(EVENT_STREAMS_PER_JOB):
            streams.append(opened(f"/v1/jobs/{job_id}/events/stream"))
    assert [stream.status for stream in streams] == [200] * len(streams)
    assert live_server.app.state.watcher.open_streams() == len(streams)
    time.sleep(1.0)  # the watcher has looked at every followed job since

    def poll(job_id: int) -> tuple[int, float]:
        with live_server.client() as client:
            started = time.monotonic()
            response = client.get(f"/v1/jobs/{job_id}", timeout=10)
            return response.status_code, time.monotonic() - started

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(poll, jobs * 4))
    assert [status for status, _ in answers] == [200] * len(answers)
    slowest = max(seconds for _, seconds in answers)
    assert slowest < 2.0, f"a status poll took {slowest:.1f} s with {len(streams)} streams open"
    # Every stream is still open and waiting: a followed log sent its header.
    for stream in streams[::4]:
        assert not stream.ended and stream.wait_for(b"=== attempt 1 ===\nstarting\n", 2)


@pytest.mark.parametrize("live_settings", [MANY])
def test_waiting_streams_hold_no_database_connection(live_server, db, opened):
    root = artifact_root(live_server)
    for _ in range(5):
        job_id, _ = running_job(db, root)
        for _ in range(4):
            assert opened(f"/v1/jobs/{job_id}/logs?follow=true").status == 200
            assert opened(f"/v1/jobs/{job_id}/events/stream").status == 200
    time.sleep(1.0)
    pool = live_server.app.state.engine.pool
    samples = []
    for _ in range(40):
        samples.append(pool.checkedout())
        time.sleep(0.03)
    # The watcher takes one connection for one statement every half second;
    # otherwise 40 waiting streams hold none.
    assert max(samples) <= 1, samples
    assert samples.count(0) >= 30, samples


@pytest.mark.parametrize("live_settings", [{**MANY, "token_cache_seconds": 0}])
def test_many_streams_opened_at_once_are_all_answered(live_server, db):
    """Each request looks its token up (no cache), then its route waits for a
    worker thread: with more requests at once than the pool has connections, a
    connection kept from the lookup while waiting left every thread waiting for
    a connection, until the pool's 30 s timeout answered 500."""
    root = artifact_root(live_server)
    jobs = [running_job(db, root)[0] for _ in range(JOBS)]
    token = live_server.tokens["alice"]
    paths = [f"/v1/jobs/{job_id}/logs?follow=true" for job_id in jobs] * 3
    paths += [f"/v1/jobs/{job_id}/events/stream" for job_id in jobs] * 3
    paths += [f"/v1/jobs/{job_id}" for job_id in jobs] * 2
    socks = [socket.create_connection(("127.0.0.1", live_server.port)) for _ in paths]
    try:
        for sock, path in zip(socks, paths, strict=True):
            sock.sendall(
                f"GET {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\n\r\n".encode()
            )
        started, statuses = time.monotonic(), []
        for sock in socks:
            sock.settimeout(max(0.1, started + 10 - time.monotonic()))
            try:
                statuses.append(int(sock.recv(4096)[9:12]))
            except TimeoutError:
                statuses.append(None)
        assert statuses == [200] * len(paths)
    finally:
        for sock in socks:
            sock.close()
    assert eventually(lambda: live_server.app.state.watcher.open_streams() == 0)


# --- what streams deliver ----------------------------------------------------------------


def test_a_followed_log_delivers_lines_goes_on_with_the_next_attempt_and_ends(
    live_server, db, opened
):
    root = artifact_root(live_server)
    job_id, _ = running_job(db, root)
    stream = opened(f"/v1/jobs/{job_id}/logs?follow=true")
    assert stream.status == 200
    assert stream.headers["content-type"].startswith("text/plain")
    assert stream.wait_for(b"=== attempt 1 ===\nstarting\n", 5)

    for line in (b"epoch 1\n", b"epoch 2\n"):
        append(attempt_log(root, job_id, 1), line.decode())
        started = time.monotonic()
        assert stream.wait_for(line, 5), stream.body
        assert time.monotonic() - started < 2.0  # one watcher interval, 0.5 s, and the read

    # The worker is lost; the next attempt logs to its own file.
    with db.begin() as session:
        settle_lost_attempt(session, job_id, 1, max_attempts=3, reason="node down")
    with db.begin() as session:
        number, token = start_attempt(session, job_id)
    assert number == 2
    append(attempt_log(root, job_id, 2), "resuming\n")
    assert stream.wait_for(b"=== attempt 2 ===\nresuming\n", 3), stream.body
    append(attempt_log(root, job_id, 2), "epoch 3\n")
    assert stream.wait_for(b"epoch 3\n", 3)

    # The final report, then the worker's last line a moment later: both in.
    with worker(live_server, token) as client:
        done = client.post(f"/v1/jobs/{job_id}/attempts/2/status", json={"status": "succeeded"})
        assert done.status_code == 200, done.text
    append(attempt_log(root, job_id, 2), "done\n")
    assert stream.wait_end(5), stream.body
    assert stream.body == (
        b"=== attempt 1 ===\nstarting\nepoch 1\nepoch 2\n"
        b"=== attempt 2 ===\nresuming\nepoch 3\ndone\n"
    )
    assert eventually(lambda: live_server.app.state.watcher.open_streams() == 0)


def test_an_event_stream_delivers_new_events_and_ends_with_the_job(live_server, db, opened):
    job_id, token = running_job(db, artifact_root(live_server))
    stream = opened(f"/v1/jobs/{job_id}/events/stream")
    assert stream.status == 200
    assert stream.headers["content-type"].startswith("text/event-stream")
    with worker(live_server, token) as client:
        events = f"/v1/jobs/{job_id}/attempts/1/events"
        for first, last in ((1, 1), (2, 3)):
            batch = {"events": [epoch(n) for n in range(first, last + 1)]}
            assert client.post(events, json=batch).status_code == 200
            started = time.monotonic()
            assert stream.wait_for(f"id: {last}\nevent: epoch\n".encode(), 5), stream.body
            assert time.monotonic() - started < 2.0  # one watcher interval, 0.5 s, and the read
        done = client.post(f"/v1/jobs/{job_id}/attempts/1/status", json={"status": "failed"})
        assert done.status_code == 200, done.text
    assert stream.wait_end(5), stream.body
    frames = [f for f in stream.body.decode().split("\n\n") if f and f != ": ping"]
    assert [f.splitlines()[0] for f in frames] == ["id: 1", "id: 2", "id: 3", "event: end"]
    assert frames[-1] == "event: end\ndata: failed"


# --- the per-user cap ----------------------------------------------------------------------


@sqlite_only
@pytest.mark.parametrize("live_settings", [{"max_streams_per_user": 3}])
def test_each_user_holds_at_most_the_limit_of_streams(live_server, db, opened):
    root = artifact_root(live_server)
    first, second = running_job(db, root)[0], running_job(db, root)[0]
    watcher = live_server.app.state.watcher
    alice = user_id(db, "alice")
    held = [
        opened(f"/v1/jobs/{first}/events/stream"),
        opened(f"/v1/jobs/{second}/events/stream"),
        opened(f"/v1/jobs/{first}/logs?follow=true"),
    ]
    assert [stream.status for stream in held] == [200] * 3
    assert watcher.open_streams(alice) == 3

    for path in (f"/v1/jobs/{second}/logs?follow=true", f"/v1/jobs/{second}/events/stream"):
        refused = opened(path)
        assert refused.status == 429
        assert refused.headers["retry-after"] == "5"
        assert refused.json()["error"]["code"] == "too_many_streams"
        assert refused.json()["error"]["details"] == {"limit": 3}
    # Another user is not affected, and a log read without follow is no stream.
    assert opened(f"/v1/jobs/{first}/events/stream", user="bob").status == 200
    with live_server.client() as client:
        plain = client.get(f"/v1/jobs/{first}/logs")
        assert plain.status_code == 200 and plain.text == "=== attempt 1 ===\nstarting\n"
    assert watcher.open_streams(alice) == 3

    # The client going away gives its slot back.
    held.pop(0).close()
    assert eventually(lambda: watcher.open_streams(alice) == 2)
    again = opened(f"/v1/jobs/{second}/events/stream")
    assert again.status == 200
    held.append(again)
    held.pop().close()

    # HEAD of a stream answers the headers and gives its slot back too.
    with live_server.client() as client:
        for path in (f"/v1/jobs/{first}/events/stream", f"/v1/jobs/{first}/logs?follow=true"):
            assert client.head(path, timeout=5).status_code == 200
            assert eventually(lambda: watcher.open_streams(alice) == 2)
    assert opened(f"/v1/jobs/{second}/logs?follow=true").status == 200
    assert watcher.open_streams(alice) == 3


# --- a stopping server ---------------------------------------------------------------------


@sqlite_only
@pytest.mark.parametrize("live_server", ["httptools", "h11"], indirect=True)
def test_a_stopping_server_ends_its_streams_instead_of_waiting_for_the_jobs(
    live_server, db, opened
):
    job_id, _ = running_job(db, artifact_root(live_server))
    log = opened(f"/v1/jobs/{job_id}/logs?follow=true")
    events = opened(f"/v1/jobs/{job_id}/events/stream")
    assert log.wait_for(b"starting\n", 5) and events.status == 200
    started = time.monotonic()
    live_server.stop()
    assert time.monotonic() - started < 5, "the server waited for its streams"
    assert log.wait_end(1) and events.wait_end(1)
    assert log.body.endswith(b"starting\n" + STOPPING)
    assert b"event: end" not in events.body  # the job did not end: a client resumes
    live_server.start()  # and following works again after a restart
    again = opened(f"/v1/jobs/{job_id}/logs?follow=true")
    assert again.wait_for(b"=== attempt 1 ===\nstarting\n", 5)


class SlowCounter(Counter):
    """A count that lets other threads run between reading a user's count and
    writing it back, as a thread switch at the wrong moment would."""

    def __getitem__(self, key: int) -> int:
        value = super().__getitem__(key)
        time.sleep(0.002)
        return value


def test_the_stream_limit_holds_when_requests_arrive_at_once():
    """Stream routes run on worker threads, releases on the event loop: two
    requests at once must not both take a user's last slot, and the count
    must not drift."""
    watcher = JobWatcher(None, interval=0.5, per_user=1)  # type: ignore[arg-type]
    watcher._streams = SlowCounter()
    admitted, refused = [], []
    barrier = threading.Barrier(8)

    def take() -> None:
        barrier.wait()
        try:
            admitted.append(watcher.reserve(7))
        except ApiError:
            refused.append(1)

    run_threads(take, 8)
    assert (len(admitted), len(refused)) == (1, 7)
    admitted[0]()
    assert watcher.open_streams(7) == 0

    watcher.per_user = 100
    failures = []

    def open_and_close() -> None:
        try:
            for _ in range(10):
                watcher.reserve(7)()
        except Exception as exc:  # a count that drifted below zero, a KeyError
            failures.append(exc)

    run_threads(open_and_close, 8)
    assert failures == [] and watcher.open_streams(7) == 0


def run_threads(target, count: int) -> None:
    threads = [threading.Thread(target=target) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
