"""Jobs through the real API, the dispatcher and a local Ray: success, a killed worker."""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import ray
import safetensors.torch
import torch
from declared_gpus import GPUS
from tiny_jobs import SPEC as TINY_SPEC
from tiny_jobs import finished, sqlite_only, wait_for

from server.db.session import make_engine, make_session_factory
from server.dispatch import Dispatcher
from server.jobs import cluster
from silo_core.engine.runner import PruningEngine
from silo_core.spec import parse_spec
from workers import ray_actor
from workers.ray_cluster import client_address

SPEC = {**TINY_SPEC, "seed": 5}


def safetensors_equal(loaded: dict, state: dict) -> bool:
    return loaded.keys() == state.keys() and all(torch.equal(loaded[k], state[k]) for k in state)


def kill_first_attempt_and_wait(client, job_id: int) -> None:
    """SIGKILL the worker process of the job's first attempt and wait until the
    retry has ended the job: a success, in a second attempt."""
    actor = ray_actor.find(job_id, 1)
    assert actor is not None
    os.kill(ray.get(actor.pid.remote(), timeout=30), signal.SIGKILL)
    job = wait_for(client, job_id, finished)
    assert job["status"] == "succeeded", job["error_message"]
    assert job["attempt"] == 2


@pytest.mark.usefixtures("dispatching")
def test_a_submitted_job_runs_on_ray_and_its_results_can_be_downloaded(live_server):
    with live_server.client() as client:
        job_id = client.post("/v1/jobs", json={"spec": SPEC}).json()["id"]
        job = wait_for(client, job_id, finished)
        assert job["status"] == "succeeded", job["error_message"]
        assert job["attempt"] == 1
        cycles = client.get(f"/v1/jobs/{job_id}/cycles").json()["items"]
        assert [round(row["sparsity"], 2) for row in cycles] == [0.0, 0.5, 0.75]
        weights = client.get(f"/v1/jobs/{job_id}/artifacts/model.pt").content
        masks = client.get(f"/v1/jobs/{job_id}/artifacts/masks.pt").content
        listed = client.get(f"/v1/jobs/{job_id}/artifacts").json()["items"]
        portable = client.get(f"/v1/jobs/{job_id}/artifacts/model.safetensors").content
        portable_masks = client.get(f"/v1/jobs/{job_id}/artifacts/masks.safetensors").content
    names = {a["name"] for a in listed}
    assert {"model.safetensors", "masks.safetensors", "sizes.json"} <= names
    state = torch.load(io.BytesIO(weights), map_location="cpu")
    mask = torch.load(io.BytesIO(masks), map_location="cpu")
    assert safetensors_equal(safetensors.torch.load(portable), state)
    assert safetensors_equal(safetensors.torch.load(portable_masks), mask)
    zeros = sum(int((state[name] == 0).sum()) for name in mask)
    total = sum(m.numel() for m in mask.values())
    assert zeros / total >= 0.75


@pytest.mark.usefixtures("dispatching")
def test_a_worker_killed_mid_job_is_retried_and_ends_as_an_uninterrupted_run(live_server):
    spec = {**SPEC, "training": {**SPEC["training"], "epochs_per_cycle": 15}}
    with live_server.client() as client:
        job_id = client.post("/v1/jobs", json={"spec": spec}).json()["id"]
        wait_for(client, job_id, lambda job: (job["progress"]["cycle"] or 0) >= 1)
        kill_first_attempt_and_wait(client, job_id)
        cycles = client.get(f"/v1/jobs/{job_id}/cycles").json()["items"]
        events = client.get(f"/v1/jobs/{job_id}/events", params={"limit": 1000}).json()["items"]
    reference = PruningEngine(parse_spec(spec)).run().cycles
    keys = ("sparsity", "alive_weights", "max_lr", "best_val_accuracy", "final_test_accuracy")
    assert [{k: row[k] for k in keys} for row in cycles] == [
        {k: getattr(result, k) for k in keys} for result in reference
    ]
    # Every epoch is counted once: the dead attempt's events past the restore
    # point are superseded by the second attempt's.
    epochs = [(e["cycle"], e["epoch"]) for e in events]
    assert sorted(epochs) == sorted({*epochs}) and len(epochs) == 2 + 2 * 15
    assert {e["attempt"] for e in events} == {1, 2}


@pytest.mark.usefixtures("local_ray")
def test_jobs_keep_running_while_the_api_and_dispatcher_restart(live_server):
    """Running jobs live in detached actors: the API and the dispatcher going away
    (their reports wait in the worker's spool) neither stops nor restarts them."""
    settings = live_server.app.state.settings.model_copy(update={"dispatch_interval_seconds": 0.2})
    engine = make_engine(live_server.database_url)

    def start_dispatcher() -> tuple[threading.Event, threading.Thread]:
        dispatcher = Dispatcher(settings, make_session_factory(engine), live_server.base_url)
        stop = threading.Event()
        thread = threading.Thread(target=dispatcher.run, args=(stop,), daemon=True)
        thread.start()
        return stop, thread

    spec = {**SPEC, "training": {**SPEC["training"], "epochs_per_cycle": 40}}
    stop, thread = start_dispatcher()
    with live_server.client() as client:
        job_id = client.post("/v1/jobs", json={"spec": spec}).json()["id"]
        wait_for(client, job_id, lambda job: job["status"] == "running")
    stop.set()
    thread.join(timeout=10)
    live_server.stop()
    time.sleep(3)  # the worker trains on and spools what it cannot report
    assert ray_actor.find(job_id, 1) is not None
    live_server.start()
    stop, thread = start_dispatcher()
    try:
        with live_server.client() as client:
            job = wait_for(client, job_id, finished)
            events = client.get(f"/v1/jobs/{job_id}/events", params={"limit": 1000}).json()
    finally:
        stop.set()
        thread.join(timeout=10)
        engine.dispose()
    assert (job["status"], job["attempt"]) == ("succeeded", 1)  # adopted, not rerun
    epochs = [(e["cycle"], e["epoch"]) for e in events["items"]]
    assert epochs == sorted(epochs) and len(epochs) == 2 + 2 * 40  # nothing lost, in order


def postgres(action: str) -> None:
    """Stop or start this machine's PostgreSQL cluster (the one the tests use)."""
    version = sorted(os.listdir("/etc/postgresql"))[0]
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action, "-m", "fast"]
        if action == "stop"
        else ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action],
        check=True,
        capture_output=True,
    )


@pytest.mark.parametrize("empty_database_url", ["postgresql"], indirect=True)
@pytest.mark.usefixtures("dispatching")
def test_the_database_going_down_costs_no_progress(live_server):
    """PostgreSQL stopped mid-job: the API answers 503 with Retry-After, the worker
    trains on and spools its reports, and they all land once the database is back."""
    if shutil.which("pg_ctlcluster") is None or not os.path.isdir("/etc/postgresql"):
        pytest.fail("pg_ctlcluster is needed to stop and start PostgreSQL", pytrace=False)
    spec = {**SPEC, "training": {**SPEC["training"], "epochs_per_cycle": 40}}
    with live_server.client() as client:
        job_id = client.post("/v1/jobs", json={"spec": spec}).json()["id"]
        wait_for(client, job_id, lambda job: (job["progress"]["epoch"] or 0) >= 1)
        postgres("stop")
        try:
            down = client.get(f"/v1/jobs/{job_id}")
            assert down.status_code == 503, down.text
            assert down.json()["error"]["code"] == "database_unavailable"
            assert int(down.headers["retry-after"]) >= 1
            time.sleep(4)  # the worker keeps training meanwhile
            assert ray_actor.find(job_id, 1) is not None
        finally:
            postgres("start")
        job = wait_for(client, job_id, finished)
        events = client.get(f"/v1/jobs/{job_id}/events", params={"limit": 1000}).json()
    assert (job["status"], job["attempt"]) == ("succeeded", 1), job["error_message"]
    epochs = [(e["cycle"], e["epoch"]) for e in events["items"]]
    assert epochs == sorted(epochs) and len(epochs) == 2 + 2 * 40


def attempt_status(live_server, job_id: int) -> str:
    from sqlalchemy import select

    from server.db.models import JobAttempt

    engine = make_engine(live_server.database_url)
    with make_session_factory(engine)() as session:
        status = session.scalar(select(JobAttempt.status).where(JobAttempt.job_id == job_id))
    engine.dispose()
    return status


def cancel_mid_job(live_server) -> tuple[int, dict, list[dict]]:
    spec = {**SPEC, "training": {**SPEC["training"], "epochs_per_cycle": 400}}
    with live_server.client() as client:
        job_id = client.post("/v1/jobs", json={"spec": spec}).json()["id"]
        wait_for(client, job_id, lambda job: (job["progress"]["cycle"] or 0) >= 1)
        assert client.post(f"/v1/jobs/{job_id}/cancel").json()["status"] == "cancelling"
        job = wait_for(client, job_id, finished, timeout=60)
        cycles = client.get(f"/v1/jobs/{job_id}/cycles").json()["items"]
    return job_id, job, cycles


@pytest.mark.usefixtures("dispatching")
def test_a_cancelled_job_stops_itself_and_keeps_its_finished_cycles(live_server):
    job_id, job, cycles = cancel_mid_job(live_server)
    assert job["status"] == "cancelled"
    assert attempt_status(live_server, job_id) == "cancelled"  # the worker stopped, not killed
    assert [row["cycle"] for row in cycles] == [0]
    assert job["progress"]["epoch"] < 400
    assert ray_actor.find(job_id, 1) is None


@pytest.mark.parametrize("cancel_grace", [0.0])
@pytest.mark.usefixtures("dispatching")
def test_a_job_that_does_not_stop_in_the_grace_period_is_killed(live_server):
    """An epoch of resnet20 on 8,192 synthetic images takes seconds on this CPU: longer
    than a grace period of 0 s, so the dispatcher kills the worker mid-epoch."""
    spec = {
        **SPEC,
        "model": {"name": "resnet20"},
        "dataset": {"name": "synthetic", "options": {"num_train": 8192}},
        "training": {"epochs_per_cycle": 1, "batch_size": 128, "dense": {"epochs": 3}},
    }
    with live_server.client() as client:
        job_id = client.post("/v1/jobs", json={"spec": spec}).json()["id"]
        wait_for(client, job_id, lambda job: job["status"] == "running")
        assert client.post(f"/v1/jobs/{job_id}/cancel").json()["status"] == "cancelling"
        job = wait_for(client, job_id, finished, timeout=60)
    assert job["status"] == "cancelled"
    assert attempt_status(live_server, job_id) == "killed"
    deadline = time.monotonic() + 30
    while ray_actor.find(job_id, 1) is not None:
        assert time.monotonic() < deadline, "the actor outlived its kill"
        time.sleep(0.2)


@sqlite_only  # Ray's node sizes against a request: the database plays no part
@pytest.mark.usefixtures("dispatching")
def test_a_job_asking_for_more_than_any_node_has_waits_and_says_it_cannot_run(live_server):
    """The local head is one node of 2 CPUs and GPUS GPUs: the dispatcher records
    that, and says jobs asking more cannot run here, while a job that fits is not
    held up."""
    with live_server.client() as client:
        many = {"spec": SPEC, "resources": {"gpus": GPUS + 1}}
        gpu_job = client.post("/v1/jobs", json=many).json()
        big_job = client.post("/v1/jobs", json={"spec": SPEC, "resources": {"cpus": 3}}).json()
        cpu_job = client.post("/v1/jobs", json={"spec": SPEC}).json()
        done = wait_for(client, cpu_job["id"], finished)
        waiting = [client.get(f"/v1/jobs/{job['id']}").json() for job in (gpu_job, big_job)]
    assert done["status"] == "succeeded"
    cannot = "cannot run on this cluster as it stands: "
    assert [(job["status"], job["queue"]["reason"]) for job in waiting] == [
        ("queued", cannot + f"asks {GPUS + 1} GPU, the largest node has {GPUS}"),
        ("queued", cannot + "asks 3 CPU, the largest node has 2"),
    ]
    engine = make_engine(live_server.database_url)
    with make_session_factory(engine)() as session:
        capacity = cluster.recorded(session)
    engine.dispose()
    assert capacity is not None
    assert (capacity.nodes, capacity.largest_cpus, capacity.largest_gpus) == (1, 2.0, GPUS)
    assert capacity.largest_memory_gb > 0


@pytest.mark.usefixtures("dispatching")
def test_a_study_runs_its_members_training_each_dense_network_once(live_server):
    body = {"spec": SPEC, "schedules": [{"name": "silo"}, {"name": "lr_rewind"}], "seeds": [0, 1]}
    with live_server.client() as client:
        study = client.post("/v1/studies", json=body).json()
        for member in study["members"]:
            job = wait_for(client, member["job_id"], finished)
            assert job["status"] == "succeeded", job["error_message"]
        study = client.get(f"/v1/studies/{study['id']}").json()
        logs = {
            (m["schedule"], m["seed"]): client.get(f"/v1/jobs/{m['job_id']}/logs").text
            for m in study["members"]
        }
    assert study["status"] == {"succeeded": 4}
    assert [row["cycle"] for row in study["comparison"]] == [0, 1, 2]
    for row in study["comparison"]:
        assert set(row["test_accuracy"]) == {"silo", "lr_rewind"}
        assert all(cell["n"] == 2 for cell in row["test_accuracy"].values())
    dense = study["comparison"][0]["test_accuracy"]
    assert dense["silo"] == dense["lr_rewind"]  # the same dense networks
    for seed in (0, 1):
        trained = [
            label
            for (label, s), text in logs.items()
            if s == seed and "trains the dense network (cycle 0) itself" in text
        ]
        assert len(trained) == 1, f"seed {seed}: dense trained by {trained}"


@sqlite_only  # the hold-back is the dispatcher's; test_queue_reasons covers both databases
@pytest.mark.usefixtures("local_ray")
def test_study_members_wait_for_one_dense_training_then_start_from_it(live_server):
    """The cluster has room for all three members (0.5 CPU each on 2 CPUs), yet one
    trains cycle 0 while the others wait for it; they then start from its dense
    training instead of training it again."""
    schedules = [{"name": "silo"}, {"name": "lr_rewind"}, {"name": "slr"}]
    body = {"spec": SPEC, "schedules": schedules, "seeds": [0], "resources": {"cpus": 0.5}}
    engine = make_engine(live_server.database_url)
    dispatcher = Dispatcher(
        live_server.app.state.settings, make_session_factory(engine), live_server.base_url
    )
    try:
        with live_server.client() as client:
            study = client.post("/v1/studies", json=body).json()
            members = [member["job_id"] for member in study["members"]]
            launched = dispatcher.tick().launched
            assert len(launched) == 1, f"started at once: {launched}"
            producer, others = launched[0], [m for m in members if m != launched[0]]
            for job_id in others:
                reason = client.get(f"/v1/jobs/{job_id}").json()["queue"]["reason"]
                assert reason.startswith(f"waiting for job {producer}'s dense training"), reason
            deadline = time.monotonic() + 180
            while not all(finished(client.get(f"/v1/jobs/{m}").json()) for m in members):
                assert time.monotonic() < deadline, "the study did not finish"
                dispatcher.tick()
                time.sleep(0.2)
            jobs = {m: client.get(f"/v1/jobs/{m}").json() for m in members}
            logs = {m: client.get(f"/v1/jobs/{m}/logs").text for m in members}
            events = {
                m: client.get(f"/v1/jobs/{m}/events", params={"limit": 100}).json()["items"]
                for m in members
            }
    finally:
        engine.dispose()
    for job in jobs.values():
        assert (job["status"], job["attempt"]) == ("succeeded", 1), job["error_message"]
    assert "trains the dense network (cycle 0) itself" in logs[producer]
    dense_seconds = {m: [e["seconds"] for e in events[m] if e["cycle"] == 0] for m in members}
    for job_id in others:
        assert "starts from the shared dense training" in logs[job_id], logs[job_id]
        # Its cycle 0 is the producer's, reported again (same timings), not trained again.
        assert dense_seconds[job_id] == dense_seconds[producer]


def trial_processes() -> list[int]:
    """Tune trial workers alive on this machine (Ray titles them ray::ImplicitFunc)."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/cmdline", "rb") as handle:
                    if b"ImplicitFunc" in handle.read():
                        found.append(int(entry.name))
            except OSError:
                continue
    return found


# The search does not touch the database: one backend (a team's) is enough.
@pytest.mark.parametrize("empty_database_url", ["postgresql"], indirect=True)
@pytest.mark.usefixtures("dispatching")
def test_an_oracle_job_searches_on_tune_inside_its_cpus_and_survives_a_kill(live_server):
    """The job holds both CPUs of the cluster; its trials need none of their own,
    so they run, two at a time. Killed mid-search, the job's trials die with it,
    and the retry searches the cycle again and ends as an uninterrupted run."""
    grid = [0.01, 0.05, 0.2]
    spec = {**SPEC, "schedule": {"name": "oracle", "grid": grid}}
    with live_server.client() as client:
        body = {"spec": spec, "resources": {"cpus": 2}}
        job_id = client.post("/v1/jobs", json=body).json()["id"]
        deadline = time.monotonic() + 120
        while "oracle cycle 1:" not in client.get(f"/v1/jobs/{job_id}/logs").text:
            assert time.monotonic() < deadline, "the search never started"
            time.sleep(0.2)
        kill_first_attempt_and_wait(client, job_id)
        cycles = client.get(f"/v1/jobs/{job_id}/cycles").json()["items"]
        log = client.get(f"/v1/jobs/{job_id}/logs", params={"attempt": 2}).text
    reference = PruningEngine(parse_spec(spec)).run().cycles
    keys = ("cycle", "sparsity", "max_lr", "best_val_accuracy", "final_test_accuracy", "extras")
    assert [{k: row[k] for k in keys} for row in cycles] == [
        {k: getattr(result, k) for k in keys} for result in reference
    ]
    for row in cycles[1:]:
        assert row["extras"]["oracle"]["grid"] == grid
    assert log.count("3 trials, 2 at a time, 1 threads each") == 2, log
    deadline = time.monotonic() + 30
    while trial_processes():  # the dead attempt's trials went with their owner
        assert time.monotonic() < deadline, f"trial workers left: {trial_processes()}"
        time.sleep(0.5)


@pytest.mark.parametrize("empty_database_url", ["postgresql"], indirect=True)
@pytest.mark.usefixtures("local_ray")
def test_a_dispatcher_joining_by_a_ray_client_address_runs_jobs(live_server, local_ray_state):
    """`silo dispatcher` with SILO_RAY_ADDRESS=ray://...: a driver joining a
    cluster it does not run, as a team's dispatcher joins its Ray head."""
    address = client_address(local_ray_state)
    assert address is not None and address.startswith("ray://")
    settings = live_server.app.state.settings
    env = {
        **os.environ,
        "SILO_DATABASE_URL": live_server.database_url,
        "SILO_DATA_DIR": str(settings.data_dir),
        "SILO_API_URL": live_server.base_url,
        "SILO_RAY_ADDRESS": address,
        "SILO_DISPATCH_INTERVAL_SECONDS": "0.2",
    }
    silo = Path(sys.executable).with_name("silo")
    dispatcher = subprocess.Popen(
        [str(silo), "dispatcher"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    job: dict = {}
    try:
        with live_server.client() as client:
            job_id = client.post("/v1/jobs", json={"spec": SPEC}).json()["id"]
            # A Ray client's first connection starts a server process for it on the
            # head: on a loaded two-core machine that alone has taken minutes.
            job = wait_for(client, job_id, finished, timeout=420)
    finally:
        dispatcher.terminate()
        output = dispatcher.communicate(timeout=30)[0]
        print(output)  # shown when the test fails, the wait included
    assert job["status"] == "succeeded", (job["error_message"], output)
    assert f"dispatching jobs to Ray at {address}" in output
