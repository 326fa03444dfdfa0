"""The embedded server as a background process: started by ``silo demo``, stopped
by ``silo stop``.

The process runs ``silo serve`` in its own session (closing the terminal does
not stop it), logs to ``<data dir>/server.log`` and records its pid in
``<data dir>/server.pid``. Its Ray head is the usual local one, which ``silo
stop`` stops as well.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from server.settings import Settings

START_SECONDS = 180.0  # a first start creates the database and a Ray head


class ServerStartError(RuntimeError):
    """The background server did not come up; the message holds its log's tail."""


def pid_file(settings: Settings) -> Path:
    return settings.data_dir / "server.pid"


def log_file(settings: Settings) -> Path:
    return settings.data_dir / "server.log"


def answers(url: str) -> bool:
    """Whether a SILO API answers its health check at ``url``."""
    try:
        return httpx.get(f"{url}/healthz", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def start(settings: Settings, port: int) -> int:
    """Start ``silo serve`` on 127.0.0.1:``port`` in the background; its pid once it answers."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    silo = Path(sys.executable).with_name("silo")
    log = log_file(settings)
    with log.open("ab") as output:
        process = subprocess.Popen(
            [str(silo), "serve", "--port", str(port), "--no-access-log"],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    pid_file(settings).write_text(f"{process.pid}\n")
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_SECONDS
    while not answers(url):
        if process.poll() is not None or time.monotonic() > deadline:
            if process.poll() is None:
                process.terminate()
            tail = log.read_text(errors="replace")[-3000:]
            raise ServerStartError(f"the server did not start; the end of {log}:\n{tail}")
        time.sleep(0.5)
    return process.pid


def stop(settings: Settings, timeout: float = 30.0) -> int | None:
    """Stop the background server if one runs; its pid, or None when there was none."""
    path = pid_file(settings)
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        os.killpg(pid, signal.SIGTERM)  # its own session: the server and its children
    except ProcessLookupError:
        path.unlink(missing_ok=True)
        return None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        os.killpg(pid, signal.SIGKILL)
    path.unlink(missing_ok=True)
    return pid
