"""One attempt run end to end against the real API (no Ray): success, cancel, failure."""

from __future__ import annotations

import io
import threading
import time

import pytest
import torch
from tiny_jobs import SPEC, claim_order

from server.db.session import make_engine, make_session_factory
from server.jobs.attempts import settle_lost_attempt
from server.jobs.claims import claim_job
from silo_contract.layout import job_folder
from silo_contract.order import AttemptOrder
from silo_core.engine import LocalCheckpointStore, PruningEngine
from silo_core.spec import parse_spec
from workers.attempt import dense_cache, run_attempt
from workers.reporter import ApiReporter, IntakeClient, ReportSpool


def quick_reporter(order: AttemptOrder, tmp_path) -> ApiReporter:
    client = IntakeClient(order.api_url, order.job_id, order.attempt, order.token)
    spool = ReportSpool(tmp_path / "spool")
    return ApiReporter(client, spool, first_backoff=0.05, heartbeat_seconds=0.05)


def test_an_attempt_runs_the_job_and_its_results_come_back_through_the_api(live_server):
    order = claim_order(live_server, SPEC)
    outcome = run_attempt(order)
    assert (outcome.status, outcome.undelivered) == ("succeeded", 0)
    with live_server.client() as client:
        job = client.get(f"/v1/jobs/{order.job_id}").json()
        assert job["status"] == "succeeded"
        assert job["progress"]["cycle"] == 2
        cycles = client.get(f"/v1/jobs/{order.job_id}/cycles").json()["items"]
        assert [row["cycle"] for row in cycles] == [0, 1, 2]
        assert [round(row["sparsity"], 2) for row in cycles] == [0.0, 0.5, 0.75]
        events = client.get(f"/v1/jobs/{order.job_id}/events", params={"limit": 100}).json()
        assert len(events["items"]) == 2 + 2 * 2  # every epoch of every cycle, once
        names = [
            a["name"] for a in client.get(f"/v1/jobs/{order.job_id}/artifacts").json()["items"]
        ]
        assert {"model.pt", "masks.pt", "cycles.csv"} <= set(names)
        weights = client.get(f"/v1/jobs/{order.job_id}/artifacts/model.pt")
        masks = client.get(f"/v1/jobs/{order.job_id}/artifacts/masks.pt")
        table = client.get(f"/v1/jobs/{order.job_id}/artifacts/cycles.csv").text
    assert weights.status_code == masks.status_code == 200
    state = torch.load(io.BytesIO(weights.content), map_location="cpu")
    mask = torch.load(io.BytesIO(masks.content), map_location="cpu")
    kept = sum(int(m.sum()) for m in mask.values())
    total = sum(m.numel() for m in mask.values())
    assert kept / total == pytest.approx(0.25, abs=0.01)
    for name, m in mask.items():
        assert torch.all(state[name][m == 0] == 0), name  # pruned weights are zero
    assert table.splitlines()[0].startswith("cycle,")


def test_cancel_stops_a_running_attempt_at_an_epoch_boundary(live_server, tmp_path):
    long = {**SPEC, "training": {**SPEC["training"], "epochs_per_cycle": 200}}
    order = claim_order(live_server, long)
    reporter = quick_reporter(order, tmp_path)
    outcome: list = []
    thread = threading.Thread(target=lambda: outcome.append(run_attempt(order, reporter=reporter)))
    thread.start()
    with live_server.client() as client:
        deadline = time.monotonic() + 60
        while client.get(f"/v1/jobs/{order.job_id}").json()["progress"]["cycle"] != 1:
            assert time.monotonic() < deadline, "the job never reached cycle 1"
            time.sleep(0.05)
        assert client.post(f"/v1/jobs/{order.job_id}/cancel").status_code == 200
        thread.join(timeout=60)
        assert not thread.is_alive()
        job = client.get(f"/v1/jobs/{order.job_id}").json()
        cycles = client.get(f"/v1/jobs/{order.job_id}/cycles").json()["items"]
    assert outcome[0].status == "cancelled"
    assert job["status"] == "cancelled"
    assert [row["cycle"] for row in cycles] == [0]  # the finished dense cycle is kept
    assert job["progress"]["epoch"] < 200


def test_a_failing_job_is_reported_failed_with_its_error(live_server, tmp_path):
    order = claim_order(live_server, SPEC)
    broken = AttemptOrder(**{**order.__dict__, "spec": {**SPEC, "dataset": {"name": "cifar10"}}})
    outcome = run_attempt(broken, reporter=quick_reporter(order, tmp_path))
    assert outcome.status == "failed"
    with live_server.client() as client:
        job = client.get(f"/v1/jobs/{order.job_id}").json()
    assert job["status"] == "failed"
    assert "cifar" in job["error_message"].lower()
    assert "Traceback" not in job["error_message"]


def test_the_log_of_each_attempt_is_served_and_can_be_followed(live_server):
    order = claim_order(live_server, SPEC)
    lines: list[str] = []
    with live_server.client() as client:

        def follow() -> None:
            with client.stream("GET", f"/v1/jobs/{order.job_id}/logs?follow=true") as stream:
                lines.extend(stream.iter_lines())

        reader = threading.Thread(target=follow)
        reader.start()  # before the attempt writes anything: it waits for the lines
        time.sleep(0.3)
        assert run_attempt(order).status == "succeeded"
        reader.join(timeout=30)
        assert not reader.is_alive(), "follow did not end with the job"
        whole = client.get(f"/v1/jobs/{order.job_id}/logs")
        assert whole.headers["content-type"].startswith("text/plain")
        missing = client.get(f"/v1/jobs/{order.job_id}/logs", params={"attempt": 2})
        assert missing.status_code == 404
        assert "attempt" in missing.json()["error"]["message"]
    text = "\n".join(lines)
    assert text.startswith("=== attempt 1 ===")
    assert f"job {order.job_id} attempt 1 starts" in text
    assert "cycle 2 done: sparsity 0.75" in text
    assert text.rstrip().endswith("ends: succeeded")
    assert whole.text.splitlines() == lines


def test_a_failure_leaves_its_traceback_in_the_log_not_in_the_api(live_server, tmp_path):
    order = claim_order(live_server, SPEC)
    broken = AttemptOrder(**{**order.__dict__, "spec": {**SPEC, "dataset": {"name": "cifar10"}}})
    assert run_attempt(broken, reporter=quick_reporter(order, tmp_path)).status == "failed"
    with live_server.client() as client:
        text = client.get(f"/v1/jobs/{order.job_id}/logs").text
        job = client.get(f"/v1/jobs/{order.job_id}").json()
    assert "Traceback (most recent call last)" in text
    assert "Traceback" not in job["error_message"]


def test_an_oracle_job_shows_its_grid_and_choice_in_the_cycle_table(live_server):
    spec = {**SPEC, "schedule": {"name": "oracle", "grid": [0.01, 0.1]}}
    order = claim_order(live_server, spec)
    assert run_attempt(order).status == "succeeded"
    with live_server.client() as client:
        cycles = client.get(f"/v1/jobs/{order.job_id}/cycles").json()["items"]
    assert "oracle" not in cycles[0]["extras"]  # the dense cycle searches nothing
    for row in cycles[1:]:
        searched = row["extras"]["oracle"]
        assert searched["grid"] == [0.01, 0.1]
        accuracies = searched["best_val_accuracy"]
        assert row["max_lr"] == searched["grid"][accuracies.index(max(accuracies))]
        assert row["best_val_accuracy"] == max(accuracies)


def test_a_second_job_with_the_same_dense_training_reuses_it(live_server):
    first = claim_order(live_server, SPEC)
    assert run_attempt(first).status == "succeeded"
    other = {**SPEC, "schedule": {"name": "lr_rewind"}}
    second = claim_order(live_server, other)
    assert run_attempt(second).status == "succeeded"
    with live_server.client() as client:
        log = client.get(f"/v1/jobs/{second.job_id}/logs").text
        first_log = client.get(f"/v1/jobs/{first.job_id}/logs").text
        rows = [
            client.get(f"/v1/jobs/{job.job_id}/cycles").json()["items"] for job in (first, second)
        ]
    identity = parse_spec(SPEC).dense_identity()
    assert f"starts from the shared dense training {identity}: cycle 0 is not trained" in log
    assert "trains the dense network (cycle 0) itself" in first_log
    assert "cycle 0 is not trained again" not in first_log
    dense = [{k: v for k, v in r[0].items() if k not in ("seconds", "attempt")} for r in rows]
    assert dense[0] == dense[1]  # one dense training, reported by both jobs


def test_an_attempt_resuming_its_own_checkpoint_says_so_though_a_dense_training_is_shared(
    live_server,
):
    """The first attempt trains cycle 0 (offering it to others) and one epoch of
    cycle 1, then dies; the second resumes its own checkpoint, not the shared one."""
    first = claim_order(live_server, SPEC)
    folder = job_folder(first.artifact_root, first.job_id)
    stops = iter([False, False, True])  # stop after cycle 0's two epochs and one more
    PruningEngine(
        parse_spec(SPEC),
        store=LocalCheckpointStore(folder / "checkpoint"),
        dense_cache=dense_cache(first.artifact_root),
        should_stop=lambda: next(stops),
    ).run()
    assert dense_cache(first.artifact_root).path(parse_spec(SPEC).dense_identity()).exists()
    second = retry(live_server, first)
    assert run_attempt(second).status == "succeeded"
    with live_server.client() as client:
        log = client.get(f"/v1/jobs/{first.job_id}/logs", params={"attempt": 2}).text
    assert f"job {first.job_id} resumes its own checkpoint: cycle 1, 1 of 2 epochs done" in log
    assert "shared dense training" not in log and "cycle 0 is not trained again" not in log


def retry(live_server, order: AttemptOrder) -> AttemptOrder:
    """Settle the order's attempt as lost and claim the job's next attempt."""
    engine = make_engine(live_server.database_url)
    with make_session_factory(engine).begin() as session:
        settle_lost_attempt(session, order.job_id, order.attempt, max_attempts=3, reason="killed")
    with make_session_factory(engine).begin() as session:
        claim = claim_job(
            session, order.job_id, api_url=order.api_url, artifact_root=order.artifact_root
        )
    engine.dispose()
    assert claim is not None
    return claim


def test_progress_a_dead_attempt_spooled_but_never_delivered_is_not_lost(live_server):
    """Attempt 1 trains three epochs with the API out of reach (its reports stay in
    its spool), checkpoints, and dies. Attempt 2 resumes after the checkpoint, so
    it never runs those epochs again: it must report attempt 1's spool for it."""
    first = claim_order(live_server, SPEC)
    folder = job_folder(first.artifact_root, first.job_id)
    unreachable = IntakeClient("http://127.0.0.1:9", first.job_id, 1, first.token, timeout=0.2)
    spool = ReportSpool(folder / "attempts" / "1")
    dead = ApiReporter(unreachable, spool, first_backoff=10)
    stops = iter([False, False, True])
    PruningEngine(
        parse_spec(SPEC),
        reporter=dead,
        store=LocalCheckpointStore(folder / "checkpoint"),
        should_stop=lambda: next(stops),
    ).run()
    dead.close(timeout=0)
    assert spool.delivered == 0 and len(spool) == 4  # 3 epochs and cycle 0's result

    second = retry(live_server, first)
    assert run_attempt(second).status == "succeeded"
    with live_server.client() as client:
        events = client.get(f"/v1/jobs/{first.job_id}/events", params={"limit": 100}).json()
        cycles = client.get(f"/v1/jobs/{first.job_id}/cycles").json()["items"]
    epochs = [(e["cycle"], e["epoch"]) for e in events["items"]]
    assert sorted(epochs) == [(0, 1), (0, 2), (1, 1), (1, 2), (2, 1), (2, 2)]
    assert [row["cycle"] for row in cycles] == [0, 1, 2]
