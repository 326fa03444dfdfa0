"""Joining a Ray cluster: an existing one, or a local head this machine keeps running.

The embedded default starts a local Ray head as its own process (``ray start
--head``), not inside the server: a restarted server joins the same head, so
jobs running in detached actors go on while the server is away. The head's
address is kept in ``<state folder>/address``; a later start joins it if it
still answers, and its Ray Client address (``ray://``) in
``<state folder>/client-address``. Every port is chosen free (never 6379,
which Redis may hold, nor Ray Client's default 10001), and no dashboard is
started.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import ray

log = logging.getLogger("silo.workers.ray")

NAMESPACE = "silo"
START_SECONDS = 60.0


class RayUnavailableError(RuntimeError):
    """The cluster could not be joined or started."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _ray_executable() -> str:
    beside = Path(sys.executable).with_name("ray")
    return str(beside) if beside.exists() else (shutil.which("ray") or "ray")


def _answers(address: str, timeout: float = 10.0) -> bool:
    """Whether a Ray GCS answers at ``address`` (host:port)."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


def start_local_head(
    state_dir: Path, *, num_cpus: int | None = None, num_gpus: int | None = None
) -> str:
    """Start a Ray head on free ports in its own session; return its address.

    ``num_gpus`` declares GPUs whether or not the machine has them (Ray counts
    them as a logical resource), which lets a benchmark schedule GPU jobs on a
    machine without a GPU."""
    state_dir.mkdir(parents=True, exist_ok=True)
    port, client_port = free_port(), free_port()
    command = [
        _ray_executable(),
        "start",
        "--head",
        f"--port={port}",
        "--include-dashboard=false",
        "--disable-usage-stats",
        f"--dashboard-agent-listen-port={free_port()}",
        f"--ray-client-server-port={client_port}",
    ]
    if num_cpus is not None:
        command.append(f"--num-cpus={num_cpus}")
    if num_gpus is not None:
        command.append(f"--num-gpus={num_gpus}")
    log_path = state_dir / "ray-start.log"
    # Without Ray's token authentication: a driver joining by explicit address
    # only sends a token when RAY_AUTH_MODE was set before Ray was imported,
    # which a library cannot promise. A team cluster chooses its own setting.
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    with log_path.open("w") as log_file:
        # Its own session: stopping the server (even with Ctrl-C) leaves the head
        # running, and every process of this head (workers too) carries the
        # session id, which is how stop_local_head finds them and only them.
        starter = subprocess.Popen(
            command, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )
        (state_dir / "session").write_text(str(starter.pid))
        try:
            returncode = starter.wait(timeout=START_SECONDS)
        except subprocess.TimeoutExpired:
            starter.kill()
            returncode = -1
    if returncode != 0:
        raise RayUnavailableError(
            f"`ray start --head` failed ({returncode}); see {log_path}:\n"
            + log_path.read_text()[-2000:]
        )
    address = f"127.0.0.1:{port}"
    (state_dir / "address").write_text(address)
    (state_dir / "client-address").write_text(f"ray://127.0.0.1:{client_port}")
    return address


def client_address(state_dir: Path) -> str | None:
    """The local head's Ray Client address (``ray://...``), for drivers on other
    machines or in other environments, e.g. ``SILO_RAY_ADDRESS`` of a dispatcher."""
    recorded = state_dir / "client-address"
    return recorded.read_text().strip() if recorded.exists() else None


def local_head_address(
    state_dir: Path, *, num_cpus: int | None = None, num_gpus: int | None = None
) -> str:
    """The address of this machine's head: the recorded one if it answers, else a new one."""
    recorded = state_dir / "address"
    if recorded.exists():
        address = recorded.read_text().strip()
        if _answers(address):
            return address
    return start_local_head(state_dir, num_cpus=num_cpus, num_gpus=num_gpus)


def connect(
    address: str | None,
    state_dir: Path,
    *,
    num_cpus: int | None = None,
    num_gpus: int | None = None,
) -> str:
    """Join the cluster at ``address`` (``auto``, ``host:port``, ``ray://host:10001``),
    or this machine's local head when ``address`` is None; return what was joined."""
    if ray.is_initialized():
        return ray.get_runtime_context().gcs_address
    target = address or local_head_address(state_dir, num_cpus=num_cpus, num_gpus=num_gpus)
    deadline = time.monotonic() + START_SECONDS
    while True:
        try:
            ray.init(
                address=target,
                namespace=NAMESPACE,
                log_to_driver=False,
                configure_logging=False,
            )
            return target
        except (ConnectionError, RuntimeError) as exc:
            if time.monotonic() > deadline:
                raise RayUnavailableError(f"cannot join Ray at {target}: {exc}") from exc
            time.sleep(1.0)


def _session_members(session: int) -> list[int]:
    """The processes in ``session`` (Linux /proc)."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                # Fields after the parenthesised command: state ppid pgrp session ...
                fields = (entry / "stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            if int(fields[3]) == session:
                members.append(int(entry.name))
    return members


def stop_local_head(state_dir: Path, timeout: float = 15.0) -> None:
    """Stop the Ray head started with ``state_dir`` (its whole session: GCS, raylet,
    workers) and forget its addresses. Another Ray on this machine is left alone;
    without /proc (not Linux) this falls back to ``ray stop``, which stops all."""
    recorded = state_dir / "session"
    if recorded.exists() and Path("/proc/self/stat").exists():
        session = int(recorded.read_text())
        for signal_number in (signal.SIGTERM, signal.SIGKILL):
            for pid in _session_members(session):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal_number)
            deadline = time.monotonic() + timeout
            while _session_members(session) and time.monotonic() < deadline:
                time.sleep(0.2)
            if not _session_members(session):
                break
    elif recorded.exists():
        subprocess.run([_ray_executable(), "stop", "--force"], capture_output=True, check=False)
    for name in ("address", "client-address", "session"):
        (state_dir / name).unlink(missing_ok=True)
