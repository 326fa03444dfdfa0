"""Uploaded files: upload (streamed), list one's own, read, delete."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi import Path as PathParam
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from server import files
from server.api.access import ReaderDep
from server.api.deps import SessionDep, SettingsDep, UserDep
from server.api.errors import ApiError, documented, not_found
from server.api.routing import ApiRoute, binary_body
from server.auth.tokens import Caller, caller_writes
from server.db.models import UploadedFile
from server.jobs import views
from silo_contract.fields import FILE_NAME_LENGTH, MAX_ID
from silo_contract.files import FileOut, FilePage

router = APIRouter(prefix="/v1", tags=["files"], route_class=ApiRoute, responses=documented(401))

FileId = Annotated[int, PathParam(ge=1, le=MAX_ID, description="An uploaded file's id")]
FileName = Annotated[
    str,
    Query(
        min_length=1,
        max_length=FILE_NAME_LENGTH,
        description="The file's name as you know it (kept for listings; the stored file "
        "has a name of the server's)",
    ),
]


def _out(file: UploadedFile) -> FileOut:
    return FileOut(
        id=file.id,
        reference=files.reference(file),
        name=file.name,
        size=file.size,
        sha256=file.sha256,
        owner=file.owner.name,
        created_at=file.created_at,
    )


def _record(session: Session, user: Caller, name: str, received: files.Received) -> FileOut:
    with caller_writes(session, user):
        row = UploadedFile(
            owner_id=user.id,
            name=name,
            size=received.size,
            sha256=received.sha256,
            location=received.location,
        )
        session.add(row)
        session.commit()
    return _out(row)


@router.post(
    "/files",
    status_code=201,
    response_model=FileOut,
    openapi_extra=binary_body("The file's bytes, e.g. a safetensors file or a state dict"),
)
async def upload_file(
    request: Request, name: FileName, session: SessionDep, user: UserDep, settings: SettingsDep
) -> Response:
    """Upload a file as the raw body (``application/octet-stream``, ``?name=``),
    at most SILO_MAX_UPLOAD_BYTES (413 past it, nothing kept). A spec names it
    by the answer's ``reference`` (``file:<id>``) in ``model.weights``."""
    root = settings.resolved_artifact_root()
    try:
        received = await files.receive(request.stream(), root, settings.max_upload_bytes)
    except files.UploadTooLargeError as exc:
        raise ApiError(
            413,
            "payload_too_large",
            str(exc),
            {"limit": exc.limit},
            headers={"Connection": "close"},
        ) from None
    except ClientDisconnect:
        return Response(status_code=400)  # nobody reads it; the partial file is gone
    try:
        out = await run_in_threadpool(_record, session, user, name, received)
    except BaseException:
        (Path(root) / received.location).unlink(missing_ok=True)
        raise
    return Response(out.model_dump_json(), status_code=201, media_type="application/json")


@router.get("/files", response_model=FilePage)
def list_files(
    session: SessionDep,
    user: UserDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[
        str | None, Query(pattern=views.CURSOR_PATTERN, description="A page's next_cursor")
    ] = None,
) -> FilePage:
    """Your uploaded files, newest first; follow ``next_cursor`` for older ones."""
    query = views.newest_first(
        select(UploadedFile).where(UploadedFile.owner_id == user.id),
        UploadedFile.created_at,
        UploadedFile.id,
        limit=limit,
        cursor=cursor,
    )
    rows, next_cursor = views.page(list(session.scalars(query)), limit)
    return FilePage(items=[_out(row) for row in rows], next_cursor=next_cursor)


@router.get("/files/{file_id}", response_model=FileOut)
def get_file(file_id: FileId, session: SessionDep, reader: ReaderDep) -> FileOut:
    """An uploaded file's name, size and SHA-256."""
    file = files.load_file(session, file_id, reader)
    if file is None:
        raise not_found("file")
    return _out(file)


@router.delete("/files/{file_id}", status_code=204, responses=documented(403, 409))
def delete_file(
    file_id: FileId, session: SessionDep, reader: ReaderDep, settings: SettingsDep
) -> Response:
    """Delete an uploaded file (its owner or an admin). Refused (409) while a
    queued or running job starts from it; a finished job keeps its results."""
    file = files.load_file(session, file_id, reader)
    if file is None:
        raise not_found("file")
    if not (reader.user.is_admin or reader.user.id == file.owner_id):
        raise ApiError(403, "forbidden", "only the file's owner or an admin may delete it")
    job_id = files.used_by_active_job(session, file_id)
    if job_id is not None:
        raise ApiError(
            409,
            "file_in_use",
            f"job {job_id} starts from this file and has not ended; cancel it or wait",
            {"job_id": job_id},
        )
    location = Path(settings.resolved_artifact_root()) / file.location
    session.delete(file)
    session.commit()
    location.unlink(missing_ok=True)
    return Response(status_code=204)
