"""Jobs: submit, list, read, cancel, retry, events, cycles, artifacts."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/v1", tags=["jobs"])
