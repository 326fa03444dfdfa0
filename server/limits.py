"""Refuse request bodies over a size limit with 413, before they are read whole,
and request heads over theirs with 431.

A head is limited twice: while it arrives, by the HTTP protocol
(``server/serving.py``, so an endless header line is never buffered), and here
once it is complete, so a head over the limit is refused however the client's
bytes happened to be split into reads.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send


def error_body(code: str, message: str, details: Any = None) -> bytes:
    """The API's error shape, encoded: ``{"error": {"code", "message", "details"}}``."""
    return json.dumps({"error": {"code": code, "message": message, "details": details}}).encode()


def headers_too_large_body(limit: int) -> bytes:
    return error_body(
        "headers_too_large",
        f"request line and headers are limited to {limit} bytes in total",
        {"limit": limit},
    )


async def refuse_and_close(send: Send, status: int, body: bytes) -> None:
    """Answer ``status`` with the error ``body`` and say the connection closes: the
    rest of the request is not read, so the connection cannot carry another."""
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def head_size(scope: Scope) -> int:
    """The bytes of a request's head as sent: request line, header lines, blank line."""
    query = scope["query_string"]
    target = len(scope["raw_path"]) + (len(query) + 1 if query else 0)
    # "GET /path?query HTTP/1.1\r\n", each "name: value\r\n", then "\r\n"
    size = len(scope["method"]) + 1 + target + 1 + 5 + len(scope["http_version"]) + 2 + 2
    for name, value in scope["headers"]:
        size += len(name) + len(value) + 4
    return size


class HeaderSizeLimit:
    """Pure ASGI middleware: a complete request head over ``max_bytes`` gets 431
    and the connection is closed (the body, if any, is never read)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or head_size(scope) <= self.max_bytes:
            await self.app(scope, receive, send)
            return
        await refuse_and_close(send, 431, headers_too_large_body(self.max_bytes))


class BodySizeLimit:
    """Pure ASGI middleware.

    A declared Content-Length over the limit is refused at once. A body sent
    without one (chunked) is read here up to the limit and then handed on, so
    the application never buffers more than ``max_bytes``.

    ``streamed`` maps the paths whose POST body the route streams itself (an
    upload) to their own, larger limit: there only a declared length over it is
    refused here, and nothing is buffered; the route counts what arrives.
    """

    def __init__(
        self, app: ASGIApp, max_bytes: int, streamed: Mapping[str, int] | None = None
    ) -> None:
        self.app, self.max_bytes, self.streamed = app, max_bytes, dict(streamed or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        streamed = self.streamed.get(scope["path"]) if scope["method"] == "POST" else None
        if streamed is not None:
            if declared is not None and declared.isdigit() and int(declared) > streamed:
                await refuse_and_close(send, 413, too_large_body(streamed))
                return
            await self.app(scope, receive, send)
            return
        if declared is not None:
            if declared.isdigit() and int(declared) > self.max_bytes:
                await self._refuse(send)
                return
            await self.app(scope, receive, send)
            return
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        total = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > self.max_bytes:
                await self._refuse(send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send) -> None:
        await refuse_and_close(send, 413, too_large_body(self.max_bytes))


def too_large_body(limit: int) -> bytes:
    return error_body(
        "payload_too_large", f"request bodies are limited to {limit} bytes", {"limit": limit}
    )
