"""The ``silo`` client commands: typer's CliRunner for arguments and output, and the
installed executable in a subprocess, all against the live API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from outputs_check import check_portable_outputs
from tiny_jobs import SPEC, run_job, sqlite_only
from typer.testing import CliRunner

from silo_client.entry import app
from silo_contract.jobs import JobOut
from silo_contract.studies import StudyOut

SILO = Path(sys.executable).parent / "silo"
STUDY_BASE = {**SPEC, "schedule": {"name": "silo"}}

runner = CliRunner()


@pytest.fixture
def spec_file(tmp_path) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(SPEC))
    return path


@pytest.fixture
def silo(live_server, tmp_path):
    """``silo ARGS`` in this process against the live API as alice; the result."""
    isolated = {
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "SILO_DATA_DIR": str(tmp_path / "data"),
        "SILO_SERVER": None,
        "SILO_TOKEN": None,
    }

    def invoke(*args: str, auth: bool = True):
        where = ["--server", live_server.base_url, "--token", live_server.tokens["alice"]]
        return runner.invoke(app, [*args, *(where if auth else [])], env=isolated)

    return invoke


def one_error_line(result) -> str:
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.output
    return lines[0]


@sqlite_only
def test_submit_list_status_cancel_and_retry(silo, spec_file):
    options = ["--json", "--name", "n1", "--tag", "x", "--cpus", "2"]
    submitted = silo("submit", str(spec_file), *options)
    assert submitted.exit_code == 0, submitted.output
    job = JobOut.model_validate_json(submitted.stdout)
    assert (job.name, job.tags, job.resources.cpus, job.status) == ("n1", ["x"], 2, "queued")

    listed = silo("list", "--json", "--tag", "x")
    assert [item["id"] for item in json.loads(listed.stdout)] == [job.id]
    table = silo("list", "--status", "queued")
    assert table.exit_code == 0
    header, row = table.stdout.splitlines()[:2]
    assert header.split()[:5] == ["id", "name", "status", "model", "schedule"]
    assert "best val" in header  # validation accuracy, as the column says
    model, schedule = SPEC["model"]["name"], SPEC["schedule"]["name"]
    assert row.split()[:5] == [str(job.id), "n1", "queued", model, schedule]
    assert all(len(line) <= 80 for line in table.stdout.splitlines())

    status = silo("status", str(job.id))
    assert status.exit_code == 0
    assert "queued" in status.stdout and "next to run" in status.stdout

    cancelled = silo("cancel", str(job.id))
    assert (cancelled.exit_code, cancelled.stdout.strip()) == (0, f"job {job.id} cancelled")
    retried = silo("retry", str(job.id), "--json")
    assert JobOut.model_validate_json(retried.stdout).status == "queued"


@sqlite_only
def test_bad_input_exits_2_with_one_error_line(silo, tmp_path):
    missing = silo("submit", str(tmp_path / "nope.yaml"))
    assert missing.exit_code == 2
    assert one_error_line(missing) == f"error: {tmp_path / 'nope.yaml'}: no such file"

    broken = tmp_path / "broken.yaml"
    broken.write_text("model: {name: mlp\npruning: [")
    invalid = silo("submit", str(broken))
    assert invalid.exit_code == 2
    assert "invalid YAML at line" in one_error_line(invalid)

    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n- 2\n")
    not_a_mapping = silo("study", "submit", str(listed))
    assert not_a_mapping.exit_code == 2
    assert "a spec is a mapping of fields, not list" in one_error_line(not_a_mapping)

    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({**SPEC, "pruning": {**SPEC["pruning"], "fraction": 2}}))
    refused = silo("submit", str(wrong))
    assert refused.exit_code == 2
    assert "spec.pruning.fraction" in one_error_line(refused)


@sqlite_only
def test_server_and_network_errors_exit_1_with_one_error_line(silo, live_server):
    unknown = silo("status", "424242")
    assert unknown.exit_code == 1
    assert one_error_line(unknown) == "error: no such job [HTTP 404 not_found]"

    stranger = silo("list", "--server", live_server.base_url, "--token", "wrong", auth=False)
    assert stranger.exit_code == 1
    assert "HTTP 401" in one_error_line(stranger) and "(token from --token)" in stranger.stderr

    nobody = silo("list", "--server", "http://127.0.0.1:9", "--token", "t", auth=False)
    assert nobody.exit_code == 1
    assert one_error_line(nobody).startswith("error: cannot reach http://127.0.0.1:9")


@sqlite_only
def test_without_a_token_it_says_where_to_give_one(silo, live_server):
    result = silo("list", "--server", live_server.base_url, auth=False)
    assert result.exit_code == 2
    assert one_error_line(result).startswith("error: no API token: pass --token")


def test_watch_on_a_finished_job_prints_the_cycle_table(silo, finished_job, tmp_path):
    watched = silo("watch", str(finished_job))
    assert watched.exit_code == 0, watched.output
    assert f"job {finished_job}: succeeded" in watched.stdout
    rows = [line for line in watched.stdout.splitlines() if "75.00%" in line]
    assert len(rows) == 1 and rows[0].split()[1] == "2"  # cycle 2 at 75% sparsity
    as_json = silo("watch", str(finished_job), "--json")  # waits on the status alone
    assert as_json.exit_code == 0, as_json.output
    assert JobOut.model_validate_json(as_json.stdout).status == "succeeded"

    logged = silo("logs", str(finished_job))
    assert logged.stdout.splitlines()[0] == "=== attempt 1 ==="

    downloaded = silo("download", str(finished_job), str(tmp_path / "out"), "--json")
    names = {Path(p).name for p in json.loads(downloaded.stdout)}
    assert {"model.pt", "masks.pt", "cycles.csv", "model.safetensors", "masks.safetensors"} <= names
    check_portable_outputs(tmp_path / "out")  # the downloaded folder rebuilds the network

    shown = silo("download", str(finished_job), str(tmp_path / "again"))
    assert shown.exit_code == 0, shown.output
    assert "sizes on disk" in shown.stdout and "weights CSR, int32 indices" in shown.stdout


@sqlite_only
def test_watch_exits_1_when_the_job_was_cancelled(silo, api):
    job = api.submit(SPEC)
    api.cancel(job.id)
    watched = silo("watch", str(job.id))
    assert watched.exit_code == 1
    assert f"job {job.id}: cancelled" in watched.stdout
    as_json = silo("watch", str(job.id), "--json")
    assert as_json.exit_code == 1
    assert JobOut.model_validate_json(as_json.stdout).status == "cancelled"


def test_study_submit_show_and_list(silo, live_server, tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump(STUDY_BASE))
    args = ["--schedule", "silo", "--schedule", "lr_rewind", "--seed", "0", "--seed", "1"]
    submitted = silo("study", "submit", str(base), *args, "--json")
    assert submitted.exit_code == 0, submitted.output
    study = StudyOut.model_validate_json(submitted.stdout)
    assert study.schedules == ["silo", "lr_rewind"] and study.seeds == [0, 1]
    for _ in range(4):
        run_job(live_server)

    shown = silo("study", "show", str(study.id))
    assert shown.exit_code == 0, shown.output
    assert f"study {study.id}: 4 succeeded" in shown.stdout
    last = next(line for line in shown.stdout.splitlines() if "75.00%" in line)
    assert last.count("±") == 2 and last.count("(2)") == 2  # mean ± std (n) per schedule

    listed = silo("study", "list", "--json")
    assert [item["id"] for item in json.loads(listed.stdout)] == [study.id]


@sqlite_only
def test_the_installed_silo_command(live_server, spec_file, tmp_path):
    env = {
        **os.environ,
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "SILO_DATA_DIR": str(tmp_path / "data"),
        "SILO_SERVER": live_server.base_url,  # the server and token come from the environment
        "SILO_TOKEN": live_server.tokens["alice"],
    }
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [")

    def start(*args: str) -> subprocess.Popen:
        return subprocess.Popen(
            [str(SILO), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    # Each start imports the whole command (seconds): the independent ones run side by side.
    running = {
        "submit": start("submit", str(spec_file), "--json"),
        "bad": start("submit", str(bad)),
        "unknown": start("status", "424242"),
    }
    done = {name: (p.wait(timeout=120), *p.communicate()) for name, p in running.items()}

    code, out, err = done["submit"]
    assert code == 0, err
    job = JobOut.model_validate_json(out)
    code, out, err = done["bad"]
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith(f"error: {bad}: invalid YAML")
    code, out, err = done["unknown"]
    assert (code, err) == (1, "error: no such job [HTTP 404 not_found]\n")

    listed = subprocess.run(
        [str(SILO), "list"], env=env, capture_output=True, text=True, timeout=120
    )
    assert listed.returncode == 0, listed.stderr
    assert any(line.split()[:1] == [str(job.id)] for line in listed.stdout.splitlines())


@sqlite_only
@pytest.mark.usefixtures("team_plugins")
def test_catalog_prints_each_name_with_its_origin(silo):
    table = silo("catalog")
    assert table.exit_code == 0, table.output
    rows = {" ".join(line.split()) for line in table.stdout.splitlines()}
    assert "models resnet20 built in" in rows
    assert "models team_mlp silo-team-models 0.1" in rows
    assert "pruning methods team_largest silo-team-models 0.1" in rows
    assert "presets digits-silo built in" in rows

    listed = json.loads(silo("catalog", "--json").stdout)
    assert {
        "name": "team_blobs",
        "origin": {"source": "plugin", "distribution": "silo-team-models", "version": "0.1"},
    } in listed["datasets"]
    assert silo("catalog", auth=False).exit_code != 0


@sqlite_only
def test_silo_upload_prints_the_id_and_reference(silo, tmp_path):
    path = tmp_path / "w.pt"
    path.write_bytes(b"weights")
    done = silo("upload", str(path))
    assert done.exit_code == 0, done.output
    file_id, reference, name = done.stdout.split()[:3]
    assert reference == f"file:{file_id}" and name == "w.pt"
    as_json = silo("upload", str(path), "--json")
    assert as_json.exit_code == 0 and '"reference": "file:' in as_json.stdout
    missing = silo("upload", str(tmp_path / "nope"))
    assert missing.exit_code == 2
