"""The base install is the client: a fresh venv with ``pip install <project>`` and
no extras gets the ``silo`` command's user commands, and none of torch, Ray,
FastAPI or SQLAlchemy. A real server (this test's) answers it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_jobs import SPEC, run_job, sqlite_only

ROOT = Path(__file__).resolve().parents[2]
NOT_SOURCES = (".*", "build", "*.egg-info", "__pycache__", "node_modules", "docs", "bench")
SERVICE_ONLY = ("torch", "torchvision", "ray", "fastapi", "sqlalchemy", "uvicorn", "numpy")


@pytest.fixture(scope="module")
def client_venv(tmp_path_factory) -> Path:
    """A venv holding the project's base install only (built once for this module)."""
    venv = tmp_path_factory.mktemp("client-only") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    # From a copy of the sources: setuptools builds in the source tree (build/).
    source = venv.parent / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*NOT_SOURCES))
    installed = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", str(source)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert installed.returncode == 0, installed.stderr[-4000:]
    return venv


def test_the_base_install_has_none_of_the_service_parts(client_venv):
    probe = (
        "import importlib.util, json; "
        f"print(json.dumps([m for m in {SERVICE_ONLY!r} if importlib.util.find_spec(m)]))"
    )
    found = subprocess.run(
        [str(client_venv / "bin" / "python"), "-c", probe],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert found.returncode == 0, found.stderr
    assert found.stdout.strip() == "[]"


@sqlite_only
def test_the_client_alone_lists_and_watches_a_live_servers_jobs(client_venv, live_server, tmp_path):
    job_id = run_job(live_server, SPEC)
    silo = str(client_venv / "bin" / "silo")
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "SILO_SERVER": live_server.base_url,
        "SILO_TOKEN": live_server.tokens["alice"],
    }

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([silo, *args], env=env, capture_output=True, text=True, timeout=120)

    helped = run("--help")
    assert helped.returncode == 0, helped.stderr
    for command in ("submit", "list", "watch", "serve", "run"):
        assert f" {command} " in helped.stdout

    listed = run("list")
    assert listed.returncode == 0, listed.stderr
    assert any(line.split()[:1] == [str(job_id)] for line in listed.stdout.splitlines())

    watched = run("watch", str(job_id))
    assert watched.returncode == 0, watched.stderr
    assert f"job {job_id}: succeeded" in watched.stdout
    assert "test@best" in watched.stdout  # the cycle table, printed by silo_core.tables

    clustered = run("cluster")  # the cluster view's tables need no service part either
    assert clustered.returncode == 0, clustered.stderr
    assert "next to run" in clustered.stdout

    # What needs a part that is not installed says which extra, in one line.
    for args, part in ((("serve",), "server"), (("token", "list"), "server"), (("run",), "engine")):
        refused = run(*args, "--preset", "digits-silo") if args == ("run",) else run(*args)
        assert refused.returncode == 2
        assert refused.stderr.count("\n") == 1, refused.stderr
        assert f"pip install 'silo-service[{part}]'" in refused.stderr
