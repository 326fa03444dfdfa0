"""Jobs that start from given weights, end to end: uploaded through the API,
resolved by the dispatcher, loaded by a worker on a real local Ray."""

from __future__ import annotations

import io
import os
import pickle

import pytest
import torch
from safetensors.torch import save_file
from tiny_jobs import SPEC, finished, sqlite_only, wait_for

from silo_core.engine import PruningEngine
from silo_core.spec import parse_spec

# A dispatcher beside the live API for every test here, as `silo serve` runs one.
pytestmark = pytest.mark.usefixtures("dispatching")
OCTETS = {"Content-Type": "application/octet-stream"}


def starting_from(weights: str, cycles: int = 1) -> dict:
    return {
        **SPEC,
        "model": {"name": "mlp", "weights": weights},
        "pruning": {**SPEC["pruning"], "cycles": cycles},
        "training": {**SPEC["training"], "dense": {"epochs": 0}},
    }


def upload(client, data: bytes, name: str) -> str:
    answer = client.post("/v1/files", params={"name": name}, content=data, headers=OCTETS)
    assert answer.status_code == 201, answer.text
    return answer.json()["reference"]


def safetensors_bytes(state: dict[str, torch.Tensor], tmp_path) -> bytes:
    path = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, path)
    return path.read_bytes()


class Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@sqlite_only
def test_jobs_start_from_an_upload_and_from_an_earlier_jobs_output(live_server, tmp_path):
    # A digits network trained here, outside the service; its test accuracy as
    # the engine measures it on the digits test split.
    trained = PruningEngine(parse_spec(SPEC)).run()
    accuracy = trained.cycles[-1].final_test_accuracy
    with live_server.client() as client:
        reference = upload(client, safetensors_bytes(trained.model_state, tmp_path), "mine.st")
        first = client.post("/v1/jobs", json={"spec": starting_from(reference)}).json()["id"]
        job = wait_for(client, first, finished)
        assert job["status"] == "succeeded", job["error_message"]
        cycles = client.get(f"/v1/jobs/{first}/cycles").json()["items"]
        assert cycles[0]["best_epoch"] == 0  # evaluated, not trained
        assert cycles[0]["final_test_accuracy"] == pytest.approx(accuracy, abs=1e-9)
        assert cycles[0]["test_accuracy_at_best_val"] == pytest.approx(accuracy, abs=1e-9)

        # Prune the first job's output further, from its portable weights.
        further = starting_from(f"job:{first}/model.safetensors", cycles=2)
        second = client.post("/v1/jobs", json={"spec": further}).json()["id"]
        job = wait_for(client, second, finished)
        assert job["status"] == "succeeded", job["error_message"]
        before = torch.load(
            io.BytesIO(client.get(f"/v1/jobs/{first}/artifacts/model.pt").content),
            weights_only=True,
        )
        masks = torch.load(
            io.BytesIO(client.get(f"/v1/jobs/{second}/artifacts/masks.pt").content),
            weights_only=True,
        )
        reached = client.get(f"/v1/jobs/{first}/cycles").json()["items"][-1]["sparsity"]
        cycles = client.get(f"/v1/jobs/{second}/cycles").json()["items"]
    # It starts at the first job's sparsity (its zeros are masks) and goes on,
    # removing half of what is alive per cycle.
    alive = [1 - reached, (1 - reached) / 2, (1 - reached) / 4]
    assert [row["sparsity"] for row in cycles] == pytest.approx([1 - a for a in alive], abs=1e-3)
    assert cycles[0]["best_epoch"] == 0
    for name, alive in masks.items():
        assert int((before[name] == 0).sum()) > 0, name
        assert not alive[before[name] == 0].any(), name


@sqlite_only
def test_a_pickle_that_would_run_code_fails_its_job_and_never_runs(live_server, tmp_path):
    marker = tmp_path / "payload-ran"
    evil = pickle.dumps({"fc.weight": Payload(str(marker))})
    with live_server.client() as client:
        reference = upload(client, evil, "model.pt")
        job_id = client.post("/v1/jobs", json={"spec": starting_from(reference)}).json()["id"]
        job = wait_for(client, job_id, finished)
        events = client.get(f"/v1/jobs/{job_id}/events").json()["items"]
    assert job["status"] == "failed"
    assert "refused: neither a safetensors file nor a PyTorch state dict" in job["error_message"]
    assert events == []
    assert not marker.exists()


@sqlite_only
def test_weights_that_do_not_fit_fail_the_job_at_once_naming_the_mismatches(live_server, tmp_path):
    state = PruningEngine(parse_spec(SPEC)).model.state_dict()
    first = next(iter(state))
    state[first] = torch.zeros(3, 3)
    state["head.extra"] = torch.zeros(1)
    with live_server.client() as client:
        reference = upload(client, safetensors_bytes(state, tmp_path), "wrong.safetensors")
        spec = {**starting_from(reference), "training": SPEC["training"]}  # would train
        job_id = client.post("/v1/jobs", json={"spec": spec}).json()["id"]
        job = wait_for(client, job_id, finished)
        events = client.get(f"/v1/jobs/{job_id}/events").json()["items"]
    assert job["status"] == "failed"
    message = job["error_message"]
    assert "model.weights do not fit the model" in message
    assert f"{first!r}: shape (3, 3) in the file" in message
    assert "unexpected key 'head.extra'" in message
    assert events == []  # not one epoch was trained
