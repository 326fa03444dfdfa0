"""The route class of every /v1 route: what a request must be before a handler sees it.

Checked here once, so that no route can forget it and no bad value reaches a
query:

- headers that carry one value (``Authorization``, ``Content-Type``, ...) come
  once (400), and no header holds a NUL (400);
- no path or query parameter holds a NUL (422, naming the parameter);
- a body comes as ``application/json`` (else 415), without a content coding
  (415) or a transfer coding other than chunked (501), and is parsed as
  standard JSON with nothing a database refuses in it (``strict_json``); a
  route that declares a binary body (``binary_body``, an upload) takes
  ``application/octet-stream`` instead and reads the raw bytes itself;
- every route documents the errors it can answer (``documented``).
"""

from __future__ import annotations

import email.message
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

from server.api import strict_json
from server.api.errors import ApiError, documented

SINGLE_VALUED = (
    b"authorization",
    b"content-type",
    b"content-length",
    b"content-encoding",
    b"idempotency-key",
    b"last-event-id",
)
HEADER_NAMES = {name: name.decode().title() for name in SINGLE_VALUED}
HEADER_NAMES[b"idempotency-key"] = "Idempotency-Key"
HEADER_NAMES[b"last-event-id"] = "Last-Event-ID"


BINARY = "application/octet-stream"


def binary_body(description: str) -> dict[str, Any]:
    """A route's ``openapi_extra`` saying it takes raw bytes, which it streams
    itself; ApiRoute then checks the Content-Type and leaves the body alone."""
    return {
        "requestBody": {
            "required": True,
            "description": description,
            "content": {BINARY: {"schema": {"type": "string", "format": "binary"}}},
        }
    }


def _takes_binary(openapi_extra: dict[str, Any] | None) -> bool:
    return BINARY in ((openapi_extra or {}).get("requestBody") or {}).get("content", {})


def check_binary(request: Request) -> None:
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != BINARY:
        raise ApiError(
            415,
            "unsupported_media_type",
            f"Content-Type: send the file as {BINARY}"
            + (f", not {content_type[:100]!r}" if content_type else ""),
            [{"field": "Content-Type", "message": f"must be {BINARY}"}],
        )


class ParsedJsonRequest(Request):
    """A request whose JSON body was parsed strictly before the handler ran."""

    def __init__(self, request: Request, body: bytes, value: Any) -> None:
        super().__init__(request.scope, request.receive)
        self._body, self._json = body, value


def _invalid_parameter(field: str, message: str) -> ApiError:
    return ApiError(
        422, "invalid_request", f"{field}: {message}", [{"field": field, "message": message}]
    )


def check_headers(request: Request) -> None:
    seen: set[bytes] = set()
    for name, value in request.scope["headers"]:
        if b"\x00" in value:
            raise ApiError(400, "invalid_header", f"{name.decode()}: must not contain NUL")
        if name in SINGLE_VALUED:
            if name in seen:
                header = HEADER_NAMES[name]
                raise ApiError(
                    400,
                    "invalid_header",
                    f"{header}: send it once (it came more than once)",
                    [{"field": header, "message": "sent more than once"}],
                )
            seen.add(name)
    coding = request.headers.get("content-encoding", "identity").strip().lower()
    if coding not in ("", "identity"):
        raise ApiError(
            415,
            "unsupported_encoding",
            f"Content-Encoding: {coding!r} is not supported; send the body uncompressed",
            headers={"Accept-Encoding": "identity"},
        )
    transfer = request.headers.get("transfer-encoding")
    if transfer is not None:
        codings = [part.strip().lower() for part in transfer.split(",")]
        if codings != ["chunked"]:
            raise ApiError(
                501,
                "unsupported_transfer_coding",
                f"Transfer-Encoding: only chunked is supported (got {transfer!r})",
            )


def check_parameters(request: Request) -> None:
    for name, value in request.path_params.items():
        if isinstance(value, str) and "\x00" in value:
            raise _invalid_parameter(name, "must not contain NUL characters")
    for name, value in request.query_params.multi_items():
        if "\x00" in name or "\x00" in value:
            raise _invalid_parameter(name.replace("\x00", ""), "must not contain NUL characters")


def _is_json(content_type: str) -> bool:
    message = email.message.Message()
    message["content-type"] = content_type
    if message.get_content_maintype() != "application":
        return False
    subtype = message.get_content_subtype()
    charset = (message.get_content_charset() or "utf-8").lower()
    return (subtype == "json" or subtype.endswith("+json")) and charset in ("utf-8", "utf8")


async def parse_body(request: Request) -> Request:
    """The request with its body parsed strictly; an empty body is left to the
    route's validation ("field required")."""
    body = await request.body()
    if not body:
        return request
    content_type = request.headers.get("content-type")
    if content_type is None or not _is_json(content_type):
        raise ApiError(
            415,
            "unsupported_media_type",
            "Content-Type: send the body as application/json (UTF-8)"
            + (f", not {content_type[:100]!r}" if content_type else ""),
            [{"field": "Content-Type", "message": "must be application/json"}],
        )
    try:
        value = strict_json.loads(body)
    except strict_json.JsonSyntaxError as exc:
        raise ApiError(
            400,
            "invalid_json",
            f"body: not valid JSON: {exc}",
            [{"field": "body", "message": f"not valid JSON: {exc}"}],
        ) from None
    except strict_json.JsonContentError as exc:
        raise _invalid_parameter(exc.field, exc.message) from None
    return ParsedJsonRequest(request, body, value)


class ApiRoute(APIRoute):
    """An APIRoute that checks the request first and documents its errors."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        statuses = [400, 422, 503]
        if self.body_field is not None or _takes_binary(self.openapi_extra):
            statuses += [413, 415]
        if self.dependant.path_params:
            statuses.append(404)
        for status, response in documented(*statuses).items():
            self.responses.setdefault(status, response)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        takes_body = self.body_field is not None
        takes_binary = _takes_binary(self.openapi_extra)

        async def checked(request: Request) -> Response:
            check_headers(request)
            check_parameters(request)
            if takes_body:
                request = await parse_body(request)
            elif takes_binary:
                check_binary(request)
            return await handler(request)

        return checked
