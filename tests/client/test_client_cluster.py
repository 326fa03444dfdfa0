"""``silo cluster`` and ``SiloClient.cluster()`` against the live API: the tables of
capacity and use, owners against fair share and quota, the queue by reason and the
head's estimated starts, and ``--json``; the tables' text on fixed answers."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import pytest
from cluster_jobs import WAITING_GPU, busy_cluster
from rich.console import Console
from tiny_jobs import sqlite_only
from typer.testing import CliRunner

from silo_client import SiloClient
from silo_client.cluster_tables import NO_REASON, cluster_sections
from silo_client.entry import app
from silo_contract.cluster import (
    CapacityOut,
    ClusterOut,
    FairShareOut,
    QueuedEstimate,
    QueueOut,
    ReasonCount,
    UseOut,
)

runner = CliRunner()
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def rows(text: str) -> set[str]:
    """Each line of the output with its spacing collapsed."""
    return {" ".join(line.split()) for line in text.splitlines()}


@pytest.fixture
def silo(live_server, tmp_path):
    env = {"XDG_CONFIG_HOME": str(tmp_path / "config"), "SILO_SERVER": None, "SILO_TOKEN": None}

    def invoke(*args: str, user: str = "alice"):
        where = ["--server", live_server.base_url, "--token", live_server.tokens[user]]
        return runner.invoke(app, [*args, *where], env=env, terminal_width=160)

    return invoke


@sqlite_only
def test_silo_cluster_shows_capacity_owners_reasons_and_estimated_starts(live_server, silo):
    jobs = busy_cluster(live_server)
    shown = silo("cluster")
    assert shown.exit_code == 0, shown.output
    lines = rows(shown.stdout)
    assert any(line.startswith("cluster: 2 nodes, measured ") for line in lines)
    assert any(line.endswith("(fresh)") for line in lines)
    assert "CPU 8 3 5 4" in lines  # total, in use, free, largest node
    assert "GPU 2 2 0 2" in lines
    assert "memory GB 32 - - 16" in lines
    assert "2 running jobs" in lines
    assert "fair share: GPU-time over the last 1d; GPU quota: none" in lines
    # Alice ran a GPU for 930 s, bob for an hour and a minute: alice first.
    assert "alice 1 2 1 2 0.26 20.3%" in lines
    assert any(line.startswith("bob 1 1 1 1 1.02 79.") for line in lines)
    assert "queue: 3 jobs" in lines
    assert f"2 {WAITING_GPU}" in lines and f"1 {NO_REASON}" in lines
    head = [line for line in lines if line.split()[:1] in (["1"], ["2"], ["3"])]
    assert any(line.startswith(f"1 {jobs['first']} first bob 1 1 in 15m (") for line in head)
    assert any(
        line.startswith(f"2 {jobs['second']} second alice 1 1 unknown needs resources held")
        for line in head
    )

    as_json = silo("cluster", "--json")
    assert as_json.exit_code == 0, as_json.output
    answer = ClusterOut.model_validate_json(as_json.stdout)
    assert [job.name for job in answer.queue.head] == ["first", "second", "third"]
    assert answer.capacity.state == "fresh" and answer.in_use.gpus == 2


@sqlite_only
def test_the_client_method_returns_the_model_and_the_command_needs_a_token(live_server):
    with SiloClient(live_server.base_url, live_server.tokens["bob"]) as client:
        first, again = client.cluster(), client.cluster()  # the second: 304, answer held
    assert first == again and first.scope == "all"
    refused = runner.invoke(
        app, ["cluster", "--server", live_server.base_url, "--token", "not-a-token"]
    )
    assert refused.exit_code == 1
    assert refused.stderr.startswith("error: ") and "401" in refused.stderr


def fixed_answer(**queue) -> ClusterOut:
    return ClusterOut(
        scope="own",
        capacity=CapacityOut(state="unknown"),
        in_use=UseOut(jobs=1, cpus=1, gpus=0.5, free_cpus=None, free_gpus=None),
        fair_share=FairShareOut(window_seconds=7200, gpu_quota=1.5),
        owners=[],
        queue=QueueOut(queued=1, by_reason=[ReasonCount(reason=None, jobs=1)], **queue),
    )


def head_job(start: datetime | None, because: str | None = None) -> QueuedEstimate:
    return QueuedEstimate(
        position=7,
        id=42,
        name="mine",
        owner="alice",
        priority=0,
        cpus=1,
        gpus=0.25,
        reason="waiting for 0.25 GPU (free: 0)",
        estimated_start=start,
        unknown_because=because,
    )


def printed(answer: ClusterOut) -> set[str]:
    console = Console(width=160, record=True, file=io.StringIO())
    for section in cluster_sections(answer, NOW):
        console.print(section)
    return rows(console.export_text())


def test_the_tables_say_what_is_unknown_and_when_a_job_may_start():
    lines = printed(
        fixed_answer(
            head=[
                head_job(NOW + timedelta(minutes=90)),
                head_job(NOW + timedelta(days=2)),
                head_job(NOW),
                head_job(None, "a job ahead of it has no estimate"),
            ]
        )
    )
    assert "cluster: size unknown (no dispatcher has measured it)" in lines
    assert "CPU - 1 - -" in lines and "GPU - 0.5 - -" in lines
    assert "fair share: GPU-time over the last 2h; GPU quota: 1.5 per owner" in lines
    assert "queue: 1 job" in lines and f"1 {NO_REASON}" in lines
    reason = "waiting for 0.25 GPU (free: 0)"
    assert f"7 42 mine alice 1 0.25 in 1h (13:30 UTC) {reason}" in lines
    assert f"7 42 mine alice 1 0.25 in 2d (2026-12-03 12:00 UTC) {reason}" in lines
    assert f"7 42 mine alice 1 0.25 now {reason}" in lines
    assert "7 42 mine alice 1 0.25 unknown a job ahead of it has no estimate" in lines
