"""What the client raises: one base class, so a caller (or the CLI) catches one thing."""

from __future__ import annotations

from typing import Any


class SiloError(Exception):
    """Anything that kept a client call from getting its answer."""


class SiloApiError(SiloError):
    """The API answered an error: ``{"error": {"code", "message", "details"}}``.

    ``fields`` are the request fields the API named (a 422 names each wrong one).
    """

    def __init__(
        self, status: int, code: str, message: str, fields: list[str] | None = None
    ) -> None:
        self.status, self.code, self.message = status, code, message
        self.fields = list(fields or [])
        super().__init__(str(self))

    def __str__(self) -> str:
        text = " ".join(self.message.split())  # one line, whatever the server sent
        missing = [f for f in self.fields if f not in text]
        if missing:
            text += f" (field: {', '.join(missing)})"
        return f"{text} [HTTP {self.status} {self.code}]"

    @classmethod
    def from_body(cls, status: int, reason: str, body: Any) -> SiloApiError:
        """Read the API's error shape; anything else (a proxy's HTML page) keeps the reason."""
        error = body.get("error") if isinstance(body, dict) else None
        if not isinstance(error, dict):
            return cls(status, "http_error", reason or f"HTTP {status}")
        details = error.get("details")
        fields = []
        if isinstance(details, list):
            fields = [d["field"] for d in details if isinstance(d, dict) and "field" in d]
        return cls(
            status,
            str(error.get("code") or "http_error"),
            str(error.get("message") or reason),
            fields,
        )


class SiloConnectionError(SiloError):
    """The server could not be reached (after the retries)."""


class ChecksumMismatchError(SiloError):
    """A downloaded artifact's SHA-256 is not the one the API registered."""

    def __init__(self, name: str, expected: str, actual: str) -> None:
        self.name, self.expected, self.actual = name, expected, actual
        super().__init__(
            f"artifact {name!r}: checksum mismatch (expected sha256 {expected}, got {actual})"
        )
