"""schemathesis hooks for the fuzz run (SCHEMATHESIS_HOOKS=silo_fuzz_hooks).

The fuzzer may do anything its token may, including revoking that token or
deactivating its own user, after which every request is a 401 and nothing
else is tested: those two requests are pointed elsewhere. Requests to the
workers' intake are pointed, now and then, at the live attempt whose token
the run holds, so that they get past authentication to the checks behind.
A stream (events, a followed log) runs until its job ends, and the jobs of
the run never end (no dispatcher runs them): streams are pointed at a job
that has ended.

Four rules of the server depend on more than one field or on its state, so
JSON Schema cannot state them, and a request that satisfies the schema may
still break them (a 422 that names the field, as it should). Requests are
brought within them before they are sent, so the fuzzer's valid requests
reach what comes after:

- a weight_rewind job rewinds to an epoch of its dense training;
- a target_sparsity without cycles is reached within 200 cycles;
- an artifact is a file of its job's own output folder;
- a spec's model.weights names a file the server holds (the run's one upload,
  which the fuzzer's deletes are pointed away from).

schemathesis re-validates a request changed here, so a request meant to break
the schema is still judged as one.
"""

from __future__ import annotations

import itertools
import math
import os
from pathlib import Path
from typing import Any

import schemathesis

OWN_TOKEN_ID = os.environ.get("SILO_FUZZ_TOKEN_ID", "")
OWN_USER = os.environ.get("SILO_FUZZ_USER", "")
JOB_ID = int(os.environ.get("SILO_FUZZ_JOB_ID", "0"))
ATTEMPT = int(os.environ.get("SILO_FUZZ_ATTEMPT", "0"))
ENDED_JOB_ID = int(os.environ.get("SILO_FUZZ_ENDED_JOB_ID", "0"))
FILE_ID = os.environ.get("SILO_FUZZ_FILE_ID", "")
STREAMS = ("/v1/jobs/{job_id}/events/stream", "/v1/jobs/{job_id}/logs")
ARTIFACT_ROOT = os.environ.get("SILO_FUZZ_ARTIFACT_ROOT", "/nonexistent")
MAX_CYCLES = 200
MAX_ID, MAX_INT = 2**53 - 1, 2**31 - 1
_TURNS = itertools.count()


def _valid(parameters: dict[str, Any], name: str, largest: int) -> bool:
    """Whether a path id was valid already: a request meant to break the schema
    stays broken. (Some phases hand path parameters over as text.)"""
    text = str(parameters.get(name))
    return text.isascii() and text.isdigit() and 1 <= int(text) <= largest


def _within_dense_training(spec: dict[str, Any]) -> None:
    pruning, training = spec.get("pruning"), spec.get("training") or {}
    if not isinstance(pruning, dict) or not isinstance(training, dict):
        return
    dense = training.get("dense") or {}
    epochs = dense.get("epochs") if isinstance(dense, dict) else None
    if epochs is None:  # 0 is an epoch count too (no dense training)
        epochs = training.get("epochs_per_cycle", 10)
    rewind = pruning.get("rewind_epoch")
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (rewind, epochs))
    if numbers and rewind > epochs:
        pruning["rewind_epoch"] = int(epochs)


def _target_within_reach(spec: dict[str, Any]) -> None:
    pruning = spec.get("pruning")
    if not isinstance(pruning, dict) or pruning.get("cycles") is not None:
        return
    target, fraction = pruning.get("target_sparsity"), pruning.get("fraction", 0.2)
    if not all(isinstance(v, float | int) and 0 < v < 1 for v in (target, fraction)):
        return
    if not math.log1p(-target) / math.log1p(-fraction) <= MAX_CYCLES:
        pruning["cycles"] = MAX_CYCLES


def _names_the_upload(spec: dict[str, Any]) -> None:
    model = spec.get("model")
    if isinstance(model, dict) and isinstance(model.get("weights"), str):
        model["weights"] = f"file:{FILE_ID}"


def _in_own_output_folder(body: dict[str, Any], job_id: Any) -> None:
    if isinstance(body.get("location"), str) and isinstance(body.get("name"), str):
        folder = Path(ARTIFACT_ROOT) / "jobs" / str(job_id) / "output"
        body["location"] = str(folder / "model.pt")


def _names(value: Any, own_id: str) -> bool:
    """Whether a path parameter names ``own_id`` as the server reads it: "01" and
    " +1" are 1 to it too. (Once "01" deleted the run's upload, SQLite gave its
    id to the next upload, and the stateful phase's DELETE of that new file was
    sent to the id kept free, a false "created resource not found".)"""
    try:
        return int(str(value).strip()) == int(own_id)
    except ValueError:
        return False


@schemathesis.hook
def before_call(ctx: Any, case: Any, kwargs: Any) -> None:  # noqa: ARG001 (the hook's signature)
    path = case.operation.path
    parameters = case.path_parameters or {}
    # Some phases hand path parameters over as the text they are sent as.
    if path == "/v1/tokens/{token_id}/revoke" and _names(parameters.get("token_id"), OWN_TOKEN_ID):
        parameters["token_id"] = int(OWN_TOKEN_ID) + 1_000_000
    elif (
        path == "/v1/files/{file_id}"
        and case.method.upper() == "DELETE"
        and _names(parameters.get("file_id"), FILE_ID)
    ):
        parameters["file_id"] = int(FILE_ID) + 1_000_000
    elif path == "/v1/users/{name}" and str(parameters.get("name")) == OWN_USER:
        parameters["name"] = OWN_USER + "-other"
    elif (
        "/attempts/" in path
        and _valid(parameters, "job_id", MAX_ID)
        and _valid(parameters, "attempt", MAX_INT)
        and next(_TURNS) % 2 == 0  # every other one: the rest try ids that are no attempt
    ):
        parameters["job_id"], parameters["attempt"] = JOB_ID, ATTEMPT
    elif path in STREAMS and _valid(parameters, "job_id", MAX_ID):
        parameters["job_id"] = ENDED_JOB_ID
    body = case.body if isinstance(case.body, dict) else None
    if body is None:
        return
    if path in ("/v1/jobs", "/v1/studies") and isinstance(body.get("spec"), dict):
        _within_dense_training(body["spec"])
        _target_within_reach(body["spec"])
        _names_the_upload(body["spec"])
    elif path.endswith("/artifacts") and "job_id" in parameters:
        _in_own_output_folder(body, parameters["job_id"])
