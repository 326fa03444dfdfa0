"""Uploaded files' bodies."""

from __future__ import annotations

from pydantic import BaseModel, Field

from silo_contract.fields import BigCount, Id, Timestamp


class FileOut(BaseModel):
    """An uploaded file; ``reference`` is what a spec's ``model.weights`` names it by."""

    id: Id
    reference: str = Field(description="file:<id>, for model.weights")
    name: str
    size: BigCount
    sha256: str
    owner: str
    created_at: Timestamp


class FilePage(BaseModel):
    items: list[FileOut]
    next_cursor: str | None = Field(None, description="Pass as ?cursor= for the next page")
