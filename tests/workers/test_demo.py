"""The README's main command, `silo demo`, as a user runs it, then `silo stop`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import ray

from workers.ray_cluster import _session_members, free_port


def silo(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("silo")
    return subprocess.run(
        [str(exe), *args], env=env, capture_output=True, text=True, timeout=600, check=False
    )


@pytest.mark.usefixtures("local_ray")
def test_the_demo_runs_a_study_through_the_service_and_stop_ends_only_its_own_ray(tmp_path):
    port = free_port()
    env = {**os.environ, "SILO_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "120"}
    for name in ("SILO_DATABASE_URL", "SILO_RAY_ADDRESS", "SILO_TOKEN", "SILO_SERVER"):
        env.pop(name, None)
    env["XDG_CONFIG_HOME"] = str(tmp_path / "config")  # no user config file
    demo = silo("demo", "--port", str(port), env=env)
    try:
        assert demo.returncode == 0, demo.stdout + demo.stderr
        out = demo.stdout
        assert "study 1: silo and lr_rewind x seeds 0, 1 (4 jobs)" in out
        assert f"dashboard: http://127.0.0.1:{port}/#/studies/1" in out
        assert "93.75%" in out and "lr_rewind" in out  # the comparison table, last cycle
        study = httpx.get(
            f"http://127.0.0.1:{port}/v1/studies/1",
            headers={
                "Authorization": f"Bearer {(tmp_path / 'data' / 'admin-token').read_text().strip()}"
            },
        ).json()
        assert study["status"] == {"succeeded": 4}
        session = int((tmp_path / "data" / "ray" / "session").read_text())
        assert _session_members(session)  # the demo's own Ray head
    finally:
        stopped = silo("stop", env=env)
    assert stopped.returncode == 0, stopped.stderr
    assert "stopped the server" in stopped.stderr
    assert not _session_members(session)
    try:
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
        answered = True
    except httpx.HTTPError:
        answered = False
    assert not answered
    # The test session's Ray head, another Ray on this machine, still runs.
    assert ray.available_resources().get("CPU") is not None
    assert ray.get(ray.put(41)) + 1 == 42
