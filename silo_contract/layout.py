"""Where a job's files live under the artifact root: one function per place.

The API, the dispatcher and the workers all agree on this layout, and the API
must not load the engine (torch) to know it, so it lives here alone::

    jobs/<job id>/checkpoint/        the engine's checkpoints, shared by all attempts,
                                     so attempt n+1 resumes where attempt n stopped
    jobs/<job id>/attempts/<n>/      an attempt's report spool and its log (worker.log)
    jobs/<job id>/oracle/            an Oracle cycle's Tune trials, while it is searched
    jobs/<job id>/output/            the artifacts, as silo_core.local_run.write_outputs writes
                                     them: cycles.csv, cycles.json, model.pt and masks.pt,
                                     model.safetensors and masks.safetensors (the same
                                     tensors, with the metadata silo_core.export.load_pruned
                                     rebuilds the network from), spec.yaml, sizes.json
    dense/<dense identity>.pt        finished dense trainings, shared by jobs that
                                     differ only after cycle 0 (a study's schedules)
    files/<key>                      files users uploaded (POST /v1/files); the
                                     database keeps this path relative to the root
    files/.<key>.part                an upload still arriving (renamed when complete)
"""

from __future__ import annotations

from pathlib import Path


def job_folder(artifact_root: str | Path, job_id: int) -> Path:
    return Path(artifact_root) / "jobs" / str(job_id)


def checkpoint_folder(artifact_root: str | Path, job_id: int) -> Path:
    return job_folder(artifact_root, job_id) / "checkpoint"


def attempt_folder(artifact_root: str | Path, job_id: int, attempt: int) -> Path:
    return job_folder(artifact_root, job_id) / "attempts" / str(attempt)


def attempt_log(artifact_root: str | Path, job_id: int, attempt: int) -> Path:
    """Where an attempt's log lines go (the API serves them at /v1/jobs/{id}/logs)."""
    return attempt_folder(artifact_root, job_id, attempt) / "worker.log"


def oracle_folder(artifact_root: str | Path, job_id: int) -> Path:
    return job_folder(artifact_root, job_id) / "oracle"


def output_folder(artifact_root: str | Path, job_id: int) -> Path:
    """The job's artifacts; the only files the API registers and serves as its own."""
    return job_folder(artifact_root, job_id) / "output"


def dense_folder(artifact_root: str | Path) -> Path:
    return Path(artifact_root) / "dense"


def dense_file_name(identity: str) -> str:
    """A finished dense training's file in a dense folder (the engine's dense cache)."""
    return f"{identity}.pt"


def dense_training(artifact_root: str | Path, identity: str) -> Path:
    """Where the dense training of ``identity`` lies once finished; the dispatcher
    looks here without loading the engine."""
    return dense_folder(artifact_root) / dense_file_name(identity)


def uploaded_file(key: str) -> str:
    """An uploaded file's location relative to the artifact root (what its row keeps)."""
    return f"files/{key}"


def partial_upload(final: Path) -> Path:
    """Where an upload is written while it arrives; renamed to ``final`` when complete."""
    return final.with_name(f".{final.name}.part")
