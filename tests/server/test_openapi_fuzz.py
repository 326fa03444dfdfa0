"""schemathesis over the OpenAPI document, on SQLite and on PostgreSQL.

Every check schemathesis has runs (`--checks all`: no 5xx, no status or header
the document does not declare, responses matching their schemas, schema-valid
requests accepted and schema-breaking ones refused, auth honoured, methods and
Allow headers right) for a bounded time, through real HTTP, with an admin's
token (the admin routes too) and a live attempt's token for the workers'
intake. tests/fuzz/ holds the configuration and the hooks, which say what the
document cannot (silo_fuzz_hooks.py).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from servers import LiveServer, free_port
from sqlalchemy import select
from tiny_jobs import SPEC

FUZZ = Path(__file__).resolve().parents[1] / "fuzz"
SECONDS = int(os.environ.get("SILO_FUZZ_SECONDS", "30"))  # a longer run: set it
SEED = 20261203  # fixed, so a failure can be replayed; SILO_FUZZ_SEED overrides it


@pytest.fixture
def fuzz_target(database_url: str, tmp_path) -> Iterator[tuple[LiveServer, dict[str, str]]]:
    """The live app with the default body limit, an admin for the fuzzer, a job
    with a live attempt (for the intake), a job that has ended (for streams) and
    an uploaded file (for model.weights)."""
    from server.app import create_app
    from server.auth.admin import create_token
    from server.db.models import Job, User
    from server.db.session import make_engine, make_session_factory
    from server.jobs.attempts import start_attempt
    from server.jobs.reports import report_status
    from server.settings import Settings

    engine = make_engine(database_url)
    with make_session_factory(engine).begin() as session:
        created = create_token(session, "fuzzer", admin=True, actor="local:test")
        owner = session.scalar(select(User).where(User.name == "fuzzer")).id
        live, ended = (Job(owner_id=owner, spec=SPEC, spec_hash="fuzz") for _ in range(2))
        session.add_all([live, ended])
        session.flush()
        number, attempt_token = start_attempt(session, live.id)
        start_attempt(session, ended.id)
        from server.db.models import JobAttempt

        ended_attempt = session.scalar(select(JobAttempt).where(JobAttempt.job_id == ended.id))
        report_status(session, ended_attempt, "succeeded")
        from server.db.models import UploadedFile

        upload = UploadedFile(
            owner_id=owner, name="w.pt", size=1, sha256="0" * 64, location="files/fuzz"
        )
        session.add(upload)
        session.flush()
        env = {
            "SILO_FUZZ_USER_TOKEN": created.token,
            "SILO_FUZZ_TOKEN_ID": str(created.id),
            "SILO_FUZZ_USER": "fuzzer",
            "SILO_FUZZ_JOB_ID": str(live.id),
            "SILO_FUZZ_ATTEMPT": str(number),
            "SILO_FUZZ_ATTEMPT_TOKEN": attempt_token,
            "SILO_FUZZ_ENDED_JOB_ID": str(ended.id),
            "SILO_FUZZ_FILE_ID": str(upload.id),
        }
    engine.dispose()
    settings = Settings(database_url=database_url, data_dir=tmp_path / "data")
    env["SILO_FUZZ_ARTIFACT_ROOT"] = settings.resolved_artifact_root()
    (tmp_path / "data" / "artifacts" / "files").mkdir(parents=True)
    (tmp_path / "data" / "artifacts" / "files" / "fuzz").write_bytes(b"w")
    server = LiveServer(create_app(settings), free_port(), {}, database_url, settings)
    server.start()
    yield server, env
    server.stop()


@pytest.mark.slow
def test_schemathesis_finds_nothing_the_document_does_not_say(fuzz_target, tmp_path):
    server, env = fuzz_target
    schemathesis = Path(sys.executable).parent / "schemathesis"
    seed = os.environ.get("SILO_FUZZ_SEED", str(SEED))
    command = [
        str(schemathesis),
        "--config-file",
        str(FUZZ / "schemathesis.toml"),
        "run",
        f"{server.base_url}/openapi.json",
        "--max-time",
        str(SECONDS),
        # One worker: schemathesis's workers are threads, and CPython 3.11's ast.parse
        # (which Hypothesis calls while describing strategies) is not thread-safe
        # there: two threads at once raise "AST constructor recursion depth mismatch".
        "--workers",
        "1",
        "--seed",
        seed,
        "--generation-database",
        "none",
        # Hypothesis's health checks judge the generator's speed, not the API: on a
        # busy two-core machine they fail a run whose requests all passed.
        "--suppress-health-check",
        "all",
        "--no-color",
    ]
    run_env = {
        **os.environ,
        **env,
        "SCHEMATHESIS_HOOKS": "silo_fuzz_hooks",
        "PYTHONPATH": str(FUZZ),
    }
    result = subprocess.run(
        command,
        cwd=tmp_path,
        env=run_env,
        capture_output=True,
        text=True,
        timeout=SECONDS + 300,
    )
    output = result.stdout + result.stderr
    (tmp_path / "schemathesis.txt").write_text(output)
    summary = re.search(r"(\d+) generated.*", output)
    print(
        f"schemathesis ({server.database_url.split(':')[0]}, seed {seed}):", summary and summary[0]
    )
    assert result.returncode == 0, f"exit {result.returncode}:\n{output[-20_000:]}"
    assert "Server error" not in output and "Undocumented" not in output
    # The run kept its token to the end: what it tested was tested with it.
    headers = {"Authorization": f"Bearer {env['SILO_FUZZ_USER_TOKEN']}"}
    assert httpx.get(f"{server.base_url}/v1/me", headers=headers).status_code == 200
