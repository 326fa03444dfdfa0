"""`silo serve` in a subprocess for the benchmarks: a free port, wait until ready."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def silo_serve(folder: Path, env: dict[str, str], *, ready_seconds: float = 180) -> Iterator[str]:
    """Run `silo serve --no-access-log` with ``env`` added; yield its base URL.

    The server's output goes to ``folder/server.log``, shown if it exits early.
    """
    with silo_serve_process(folder, env, ready_seconds=ready_seconds) as (base, _):
        yield base


@contextmanager
def silo_serve_process(
    folder: Path,
    env: dict[str, str],
    *,
    ready_seconds: float = 180,
    args: Sequence[str] = (),
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`silo_serve` with more options (``args``), yielding the process too."""
    port = free_port()
    silo = Path(sys.executable).with_name("silo")
    log_path = folder / "server.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [str(silo), "serve", "--port", str(port), "--no-access-log", *args],
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            wait_until_ready(process, base, log_path, ready_seconds, "silo serve")
            yield base, process
        finally:
            process.terminate()
            process.wait(timeout=60)


def wait_until_ready(
    process: subprocess.Popen[bytes], base: str, log_path: Path, seconds: float, name: str
) -> None:
    """Poll ``base``/readyz until it answers 200; exit with ``log_path`` if ``process`` ends."""
    deadline = time.monotonic() + seconds
    while True:
        if process.poll() is not None:
            raise SystemExit(f"{name} exited:\n{log_path.read_text()}")
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"{name} was not ready in {seconds:.0f} s")
        time.sleep(0.2)
