"""Uploaded files and the starting weights a spec names (``model.weights``).

An upload is streamed to the artifact root while it is hashed, a block at a
time, under a temporary name; only a complete file is renamed into place, and
only then is its row written. Past the size limit, or when the client goes
away, the partial file is removed and nothing is recorded.

A spec's ``model.weights`` is checked at submit (the API reads no path it is
given: only ``file:<id>`` and ``job:<id>/<artifact>``, each readable by the
submitter) and resolved again when the job is dispatched, to the file's path
under the artifact root, which the worker loads.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from sqlalchemy import ColumnElement, exists, select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from server.api.access import Reader
from server.db.models import Artifact, Job, UploadedFile
from server.jobs import repository as repo
from silo_contract.layout import output_folder, partial_upload, uploaded_file
from silo_contract.status import JobStatus
from silo_core.spec.model import WEIGHTS_FORMS, weights_reference

WRITE_BLOCK = 1 << 20  # bytes gathered before one write (and hash update) on a worker thread
ACTIVE = (JobStatus.QUEUED.value, JobStatus.RUNNING.value, JobStatus.CANCELLING.value)


class UploadTooLargeError(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"uploads are limited to {limit} bytes (SILO_MAX_UPLOAD_BYTES)")
        self.limit = limit


class WeightsUnavailableError(ValueError):
    """``model.weights`` names nothing the caller may read, or not in a form the
    service reads."""


@dataclass(frozen=True)
class Received:
    location: str  # relative to the artifact root
    size: int
    sha256: str


def _write(handle: IO[bytes], digest: hashlib._Hash, block: bytes) -> None:
    handle.write(block)
    digest.update(block)


def _complete(handle: IO[bytes], partial: Path, final: Path) -> None:
    handle.flush()
    os.fsync(handle.fileno())
    handle.close()
    os.replace(partial, final)


async def receive(chunks: AsyncIterator[bytes], artifact_root: str, limit: int) -> Received:
    """Stream ``chunks`` into a new file under the artifact root, at most ``limit``
    bytes (UploadTooLargeError past it). On any failure, a disconnect included,
    nothing is left behind."""
    location = uploaded_file(uuid.uuid4().hex)
    final = Path(artifact_root) / location
    final.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_upload(final)
    digest = hashlib.sha256()
    size, pending = 0, bytearray()
    handle = partial.open("xb")
    try:
        async for chunk in chunks:
            size += len(chunk)
            if size > limit:
                raise UploadTooLargeError(limit)
            pending += chunk
            if len(pending) >= WRITE_BLOCK:
                await run_in_threadpool(_write, handle, digest, bytes(pending))
                pending.clear()
        await run_in_threadpool(_write, handle, digest, bytes(pending))
        await run_in_threadpool(_complete, handle, partial, final)
    except BaseException:  # a disconnect or a cancelled request too: leave nothing
        handle.close()
        partial.unlink(missing_ok=True)
        raise
    return Received(location, size, digest.hexdigest())


def reference(file: UploadedFile) -> str:
    return f"file:{file.id}"


def _used_by(file_id: int) -> ColumnElement[bool]:
    return Job.spec["model"]["weights"].as_string() == f"file:{file_id}"


def may_read(session: Session, reader: Reader, file: UploadedFile) -> bool:
    """Its owner, admins, everyone under ``team``; under ``owner`` also whoever may
    read a job that starts from it."""
    if reader.may_read(file.owner_id):
        return True
    return bool(
        session.scalar(select(exists().where(Job.owner_id == reader.only_owner, _used_by(file.id))))
    )


def load_file(session: Session, file_id: int, reader: Reader) -> UploadedFile | None:
    """The file if it exists and the reader may see it; None alike otherwise."""
    file = session.get(UploadedFile, file_id)
    return file if file is not None and may_read(session, reader, file) else None


def used_by_active_job(session: Session, file_id: int) -> int | None:
    """A queued or running job that starts from the file, if any."""
    return session.scalar(select(Job.id).where(Job.status.in_(ACTIVE), _used_by(file_id)).limit(1))


def weights_path(
    session: Session, weights: str, artifact_root: str, reader: Reader | None = None
) -> Path:
    """The file ``model.weights`` names, under the artifact root; with a
    ``reader``, only one they may read (missing and invisible answer alike)."""
    parsed = weights_reference(weights)
    if parsed is None:
        raise WeightsUnavailableError(
            f"the service reads no path it is given; upload the file (POST /v1/files, "
            f"silo upload) and name it by {WEIGHTS_FORMS}"
        )
    kind, ident, name = parsed
    if kind == "file":
        file = session.get(UploadedFile, ident)
        if file is None or (reader is not None and not may_read(session, reader, file)):
            raise WeightsUnavailableError(f"no uploaded file {ident} (that you may read)")
        return Path(artifact_root) / file.location
    job = repo.get_job(session, ident)
    if job is None or (reader is not None and not reader.may_read(job.owner_id)):
        raise WeightsUnavailableError(f"no job {ident} (that you may read)")
    artifact: Artifact | None = repo.get_artifact(session, ident, name or "")
    path = repo.artifact_path(artifact.location) if artifact is not None else None
    # As the API serves artifacts: only files inside the job's own output folder.
    output = output_folder(artifact_root, ident).resolve()
    if path is None or not path.resolve().is_relative_to(output):
        raise WeightsUnavailableError(
            f"job {ident} has no artifact {name!r} (a job's outputs, e.g. model.pt, "
            "exist once it has succeeded)"
        )
    return path
