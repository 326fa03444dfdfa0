"""``silo serve --workers 2`` on PostgreSQL: two processes answer on one port.

Which process answers a connection is read from the kernel, not asked of the
API: the server's end of each TCP connection (/proc/net/tcp) is a socket whose
inode one process holds among its file descriptors (/proc/PID/fd). Each
worker then shows what it must do on its own: refuse a revoked token within
1 s, answer an oversized request head 431 (the head-limiting protocol is
rebuilt in every worker), give the same ETag for the same answer and hear
the other's changes (its 304s and watches), and end its event streams when it
stops. SIGINT,
SIGTERM or SIGKILL to the supervising process leaves no worker behind. SQLite
refuses more than one worker.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from api_jobs import SPEC
from servers import free_port
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from server.settings import get_settings
from silo_client.entry import app

ROOT = Path(__file__).resolve().parents[2]
WORKERS = 2
MAX_HEADER_BYTES = 4096
# Run `silo` as the installed command does, on this checkout's code.
LAUNCH = "from silo_client.entry import main; main()"

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads the kernel's view of sockets in /proc"
)


# --- who holds what: /proc ------------------------------------------------------------


def children(pid: int) -> set[int]:
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # ended meanwhile
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    """Running, not a zombie waiting to be reaped."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def socket_inodes(pid: int) -> set[int]:
    inodes = set()
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return inodes  # ended meanwhile
    for fd in fds:
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def server_end_inode(server_port: int, client_port: int) -> int | None:
    """The inode of the server's end of the connection from ``client_port``."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, inode = fields[1], fields[2], int(fields[9])
        if int(local.split(":")[1], 16) == server_port and (
            int(remote.split(":")[1], 16) == client_port
        ):
            return inode
    return None


# --- a raw keep-alive connection ---------------------------------------------------------


class Connection:
    """One HTTP/1.1 keep-alive connection on a plain socket, so that its own port
    is known (to find the process at the other end) and nothing is retried."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buffer = b""
        self.etag: str | None = None  # the last answer's ETag

    @property
    def client_port(self) -> int:
        return self.sock.getsockname()[1]

    def send(
        self,
        method: str,
        path: str,
        token: str | None = None,
        body: object = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        payload = b"" if body is None else json.dumps(body).encode()
        lines = [f"{method} {path} HTTP/1.1", "Host: silo"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        if token:
            lines.append(f"Authorization: Bearer {token}")
        if body is not None:
            lines.append("Content-Type: application/json")
        lines.append(f"Content-Length: {len(payload)}")
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + payload)

    def read(self, *, head_only: bool = False) -> tuple[int, bytes]:
        while b"\r\n\r\n" not in self.buffer:
            self._receive()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        status = int(head.split()[1])
        self.etag = next(
            (
                line.partition(b":")[2].strip().decode()
                for line in head.split(b"\r\n")[1:]
                if line.lower().startswith(b"etag:")
            ),
            None,
        )
        if head_only:
            return status, b""
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(self.buffer) < length:
            self._receive()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return status, body

    def request(self, method: str, path: str, token: str | None = None, body: object = None):
        self.send(method, path, token, body)
        return self.read()

    def _receive(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed by the server; received {self.buffer[:200]!r}")
        self.buffer += chunk

    def close(self) -> None:
        self.sock.close()


# --- the server ---------------------------------------------------------------------------


@dataclass
class Served:
    process: subprocess.Popen[bytes]
    log: Path  # its stdout and stderr
    port: int
    root: str  # an admin's token
    alice: str  # a user's token
    seen: set[int] = field(default_factory=set)  # every process the supervisor started

    def started(self) -> set[int]:
        self.seen |= children(self.process.pid)
        return self.seen

    def workers(self) -> set[int]:
        """The supervisor's worker processes (not multiprocessing's resource tracker)."""
        found = set()
        for pid in children(self.process.pid):
            try:
                if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    found.add(pid)
            except OSError:
                continue
        return found

    def owner(self, connection: Connection) -> int | None:
        """The process that holds the server's end of ``connection``."""
        inode = server_end_inode(self.port, connection.client_port)
        if inode is None:
            return None
        for pid in children(self.process.pid) | {self.process.pid}:
            if inode in socket_inodes(pid):
                return pid
        return None

    def one_connection_per_worker(
        self, first: Callable[[Connection], None], seconds: float = 30
    ) -> dict[int, Connection]:
        """Fresh connections, each sent ``first`` (which reads its answer), until
        every worker holds one; the first per worker is kept, the others closed."""
        kept: dict[int, Connection] = {}
        deadline = time.monotonic() + seconds
        while len(kept) < WORKERS:
            assert self.process.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, f"only {sorted(kept)} answered"
            try:
                connection = Connection(self.port)
            except ConnectionRefusedError:  # not listening yet
                time.sleep(0.1)
                continue
            first(connection)
            owner = self.owner(connection)
            if owner is not None and owner not in kept:
                kept[owner] = connection
            else:
                connection.close()
        return kept


@pytest.fixture
def migrated_url(postgres_url: str) -> str:
    """The session's PostgreSQL database, emptied and migrated to head."""
    from server.db.migrate import upgrade

    engine = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    engine.dispose()
    upgrade(postgres_url)
    return postgres_url


@contextmanager
def serving(url: str, data_dir: Path) -> Iterator[Served]:
    """`silo serve --workers 2` started without a dispatcher (not yet ready), with
    two users' tokens; killed with its workers if the test left it running."""
    from server.auth.tokens import create_user_token
    from server.db.session import make_engine, make_session_factory

    engine = make_engine(url)
    with make_session_factory(engine).begin() as session:
        root = create_user_token(session, "root", admin=True)
        alice = create_user_token(session, "alice")
    engine.dispose()
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "SILO_DATABASE_URL": url,
        "SILO_DATA_DIR": str(data_dir),
        "SILO_DISPATCHER": "false",
        "SILO_MAX_HEADER_BYTES": str(MAX_HEADER_BYTES),
    }
    argv = ["serve", "--port", str(port), "--no-access-log", "--workers", str(WORKERS)]
    log = data_dir.parent / "server.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-c", LAUNCH, *argv], env=env, stdout=output, stderr=output
        )
    served = Served(process, log, port, root, alice)
    try:
        yield served
    finally:
        if process.poll() is None:
            served.started()
            process.kill()
            process.wait()
        for pid in served.seen:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def stops_everything(served: Served, sig: signal.Signals) -> None:
    """``sig`` to the supervisor alone ends it and every process it started."""
    started = served.started()
    assert served.workers() <= started and len(served.workers()) == WORKERS
    served.process.send_signal(sig)
    code = served.process.wait(timeout=20)
    assert code == (-signal.SIGKILL if sig == signal.SIGKILL else 0), served.log.read_text()
    deadline = time.monotonic() + 10
    while left := {pid for pid in started if alive(pid)}:
        assert time.monotonic() < deadline, f"left running: {sorted(left)}"
        time.sleep(0.05)


# --- the tests ----------------------------------------------------------------------------


def test_two_workers_answer_refuse_a_revoked_token_limit_heads_and_stop(migrated_url, tmp_path):
    with serving(migrated_url, tmp_path / "data") as served:

        def as_alice(connection: Connection) -> None:
            status, body = connection.request("GET", "/v1/me", served.alice)
            assert status == 200, body

        # (a) Both workers answer, each a process of its own, neither the supervisor.
        alice_on = served.one_connection_per_worker(as_alice)
        assert set(alice_on) == served.workers()
        assert served.process.pid not in alice_on

        # (b) Both have alice's token cached; a revocation through a third
        # connection applies on each within 1 s.
        status, me = Connection(served.port).request("GET", "/v1/me", served.alice)
        token_id = json.loads(me)["token_id"]
        for connection in alice_on.values():
            as_alice(connection)
        time.sleep(0.3)  # cached for 1 s (SILO_TOKEN_CACHE_SECONDS): 0.7 s left at most
        revoking = Connection(served.port)
        sent = time.monotonic()
        status, body = revoking.request("POST", f"/v1/tokens/{token_id}/revoke", served.root)
        assert status == 200, body
        refused_after: dict[int, float] = {}
        while len(refused_after) < WORKERS and time.monotonic() < sent + 5:
            for pid, connection in alice_on.items():
                if pid not in refused_after:
                    asked = time.monotonic()
                    status, body = connection.request("GET", "/v1/me", served.alice)
                    if status == 401:
                        refused_after[pid] = asked - sent
                    else:
                        assert status == 200, body
            time.sleep(0.01)
        assert set(refused_after) == set(alice_on)
        assert max(refused_after.values()) < 1.0, refused_after

        # Every worker limits request heads while they arrive: a head not yet
        # complete past SILO_MAX_HEADER_BYTES is answered 431 at once.
        for connection in alice_on.values():
            connection.sock.sendall(
                b"GET /v1/me HTTP/1.1\r\nHost: silo\r\nX-Padding: " + b"a" * 2 * MAX_HEADER_BYTES
            )
            status, body = connection.read()
            assert status == 431, body
            assert json.loads(body)["error"]["code"] == "headers_too_large"

        # (c) With an event stream open on each worker, SIGINT to the supervisor
        # ends the streams, the workers and itself.
        job = Connection(served.port).request("POST", "/v1/jobs", served.root, {"spec": SPEC})
        assert job[0] == 201, job
        stream_path = f"/v1/jobs/{json.loads(job[1])['id']}/events/stream"

        def streaming(connection: Connection) -> None:
            connection.send("GET", stream_path, served.root)
            assert connection.read(head_only=True)[0] == 200

        streams = served.one_connection_per_worker(streaming)
        stops_everything(served, signal.SIGINT)
        for connection in streams.values():  # each ended by its worker
            connection.sock.settimeout(5)
            while connection.sock.recv(65536):
                pass


def test_two_workers_give_one_tag_and_hear_each_others_changes(migrated_url, tmp_path):
    """The ETag of an answer is the same from either process; a change made through
    one reaches the other's answers, 304s and watches within a second (NOTIFY)."""
    with serving(migrated_url, tmp_path / "data") as served:
        served.one_connection_per_worker(lambda c: c.request("GET", "/readyz"))  # listening
        made = [
            Connection(served.port).request("POST", "/v1/jobs", served.root, {"spec": SPEC})
            for _ in range(2)
        ]
        polled, watched = (f"/v1/jobs/{json.loads(body)['id']}" for _, body in made)

        def poll(connection: Connection) -> None:
            status, body = connection.request("GET", polled, served.root)
            assert status == 200, body

        on = served.one_connection_per_worker(poll)
        tags = {connection.etag for connection in on.values()}
        assert len(tags) == 1 and None not in tags
        held = {"If-None-Match": tags.pop()}
        for connection in on.values():
            connection.send("GET", polled, served.root, headers=held)
            assert connection.read()[0] == 304

        # A watch on each worker, then a change through a third connection.
        watch_tag = {}
        for pid, connection in on.items():
            assert connection.request("GET", watched, served.root)[0] == 200
            watch_tag[pid] = connection.etag
            condition = {"If-None-Match": watch_tag[pid]}
            connection.send("GET", f"{watched}?wait=20s", served.root, headers=condition)
        changer = Connection(served.port)
        sent = time.monotonic()
        assert changer.request("POST", f"{watched}/cancel", served.root)[0] == 200
        for connection in on.values():
            status, body = connection.read()
            assert status == 200 and json.loads(body)["status"] == "cancelled", body
        assert time.monotonic() - sent < 1.0

        assert changer.request("POST", f"{polled}/cancel", served.root)[0] == 200
        for connection in on.values():
            deadline = time.monotonic() + 1.0
            while True:
                connection.send("GET", polled, served.root, headers=held)
                status, body = connection.read()
                if status == 200:
                    assert json.loads(body)["status"] == "cancelled"
                    break
                assert status == 304 and time.monotonic() < deadline, "a stale 304"
                time.sleep(0.02)

        # A submit's statement sends its own NOTIFY: every worker's list hears it.
        listed = {}
        for pid, connection in on.items():
            assert connection.request("GET", "/v1/jobs", served.root)[0] == 200
            listed[pid] = connection.etag
        status, body = changer.request("POST", "/v1/jobs", served.root, {"spec": SPEC})
        assert status == 201, body
        new_id = json.loads(body)["id"]
        for pid, connection in on.items():
            deadline = time.monotonic() + 1.0
            while True:
                held_list = {"If-None-Match": listed[pid]}
                connection.send("GET", "/v1/jobs", served.root, headers=held_list)
                status, body = connection.read()
                if status == 200:
                    assert json.loads(body)["items"][0]["id"] == new_id
                    break
                assert status == 304 and time.monotonic() < deadline, "a stale 304"
                time.sleep(0.02)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_the_workers_end_with_the_supervisor(migrated_url, tmp_path, sig):
    with serving(migrated_url, tmp_path / "data") as served:
        served.one_connection_per_worker(lambda c: c.request("GET", "/readyz"))
        stops_everything(served, sig)


# --- what is refused before anything starts ------------------------------------------------


def serve_in_process(monkeypatch, tmp_path, *args: str):
    monkeypatch.delenv("SILO_DATABASE_URL", raising=False)
    monkeypatch.setenv("SILO_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SILO_DISPATCHER", "false")
    monkeypatch.setenv("COLUMNS", "200")
    get_settings.cache_clear()
    try:
        return CliRunner().invoke(app, ["serve", *args])
    finally:
        get_settings.cache_clear()


def test_sqlite_refuses_several_workers(monkeypatch, tmp_path):
    result = serve_in_process(monkeypatch, tmp_path, "--workers", "2")
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: --workers 2: SQLite serves from one process")
    assert "PostgreSQL" in lines[0]
    assert not (tmp_path / "silo.db").exists()  # refused before the database was touched


@pytest.mark.parametrize(("workers", "bound"), [("0", "1"), ("65", "64")])
def test_workers_out_of_range_are_refused(monkeypatch, tmp_path, workers, bound):
    result = serve_in_process(monkeypatch, tmp_path, "--workers", workers)
    assert result.exit_code == 2
    assert "Invalid value for '--workers'" in result.stderr
    assert f"equal to {bound}" in result.stderr
