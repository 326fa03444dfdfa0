"""The one shape of every error the API answers."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ErrorBody(BaseModel):
    code: str = Field(description="Machine-readable, e.g. not_found, invalid_request")
    message: str = Field(description="For people: what is wrong and what is allowed")
    details: Any = Field(None, description="Per code: e.g. [{field, message}] for invalid input")


class ErrorOut(BaseModel):
    """Every error the API answers has this shape."""

    error: ErrorBody
