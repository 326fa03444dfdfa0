"""The API process alone (``SILO_DISPATCHER=false``) never loads the engine or Ray:
``silo serve`` started that way answers submits, reads, logs, uploads and the
catalog, and at its end has imported neither torch nor Ray nor any worker code."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from servers import free_port
from tiny_jobs import SPEC

# What the process may not hold: the engine's and the cluster's libraries.
FORBIDDEN = ("torch", "torchvision", "ray", "numpy", "sklearn", "workers", "silo_core.engine")
RSS_LIMIT_MB = 150

# Run `silo serve` as the installed command does, and write sys.modules at exit.
LAUNCH = """
import atexit, json, sys
out = sys.argv.pop()
atexit.register(lambda: open(out, "w").write(json.dumps(sorted(sys.modules))))
from silo_client.entry import main
main()
"""


def resident_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_the_api_process_never_imports_the_engine_or_ray(tmp_path):
    port = free_port()
    modules_file = tmp_path / "modules.json"
    env = {**os.environ, "SILO_DATA_DIR": str(tmp_path / "data"), "SILO_DISPATCHER": "false"}
    argv = ["serve", "--port", str(port), str(modules_file)]
    server = subprocess.Popen(
        [sys.executable, "-c", LAUNCH, *argv],  # sys.argv[0] is "-c", as "silo" would be
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, server.stderr.read()
            try:
                if httpx.get(f"{base}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not become ready"
            time.sleep(0.2)
        after_start = resident_mb(server.pid)

        token = (tmp_path / "data" / "admin-token").read_text().strip()
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}) as api:
            job = api.post("/v1/jobs", json={"spec": SPEC})
            assert job.status_code == 201, job.text
            job_id = job.json()["id"]
            study = api.post("/v1/studies", json={"spec": SPEC, "seeds": [0]})
            assert study.status_code == 201, study.text
            uploaded = api.post(
                "/v1/files",
                params={"name": "w.bin"},
                content=b"\0" * 1024,
                headers={"Content-Type": "application/octet-stream"},
            )
            assert uploaded.status_code == 201, uploaded.text
            for path in (
                f"/v1/jobs/{job_id}",
                "/v1/jobs",
                f"/v1/jobs/{job_id}/events",
                f"/v1/jobs/{job_id}/cycles",
                f"/v1/jobs/{job_id}/logs",
                f"/v1/studies/{study.json()['id']}",
                "/v1/catalog",
                "/v1/files",
            ):
                assert api.get(path).status_code == 200, path
        serving = resident_mb(server.pid)
    finally:
        server.send_signal(signal.SIGINT)  # uvicorn re-raises it: Python exits, atexit runs
        server.wait(timeout=60)

    loaded = json.loads(modules_file.read_text())
    held = sorted(
        name for name in loaded if any(name == f or name.startswith(f + ".") for f in FORBIDDEN)
    )
    assert held == []
    assert "fastapi" in loaded and "silo_contract.jobs" in loaded  # it did serve
    assert after_start < RSS_LIMIT_MB, f"{after_start:.0f} MB resident after start"
    assert serving < RSS_LIMIT_MB, f"{serving:.0f} MB resident while serving"


def test_the_dispatcher_launches_jobs_without_loading_the_engine():
    """The dispatcher (in `silo serve` by default) talks to Ray and looks for shared
    dense trainings by file name; the engine loads only in the jobs' actors."""
    probe = (
        "import json, sys, server.dispatch, workers.ray_actor; "
        "print(json.dumps(sorted(sys.modules)))"
    )
    loaded = json.loads(
        subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, check=True
        ).stdout
    )
    engine = ("torch", "torchvision", "sklearn", "silo_core.engine", "workers.attempt")
    assert [m for m in loaded if any(m == e or m.startswith(e + ".") for e in engine)] == []
    assert "ray" in loaded
