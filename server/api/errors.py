"""One error shape for every failure: ``{"error": {"code", "message", "details"}}``.

No handler ever puts a stack trace in a response; unexpected exceptions are
logged server-side and answered with a plain 500.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from server.auth.tokens import UnknownCallerError
from server.jobs.cluster import UnfitRequestError
from silo_contract.errors import ErrorOut

log = logging.getLogger("silo.api")

DB_RETRY_AFTER_SECONDS = 5
UNAUTHENTICATED = {"WWW-Authenticate": "Bearer"}  # the header of every 401
# After an unexpected error the connection's state is unknown: close it.
CLOSE = {"Connection": "close"}

_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}}
_STATUSES: dict[int, tuple[str, dict[str, Any] | None]] = {
    400: ("Malformed request: not valid JSON, or a header sent twice or holding a NUL", None),
    401: ("No token, or a token that is unknown, revoked or expired", None),
    403: ("The token is good but may not do this", None),
    404: ("No such resource (or not visible to this user)", None),
    409: ("Conflicts with the resource's state", None),
    413: ("The body is over the size limit", None),
    415: ("The body is not application/json, or is compressed", None),
    422: ("A field is invalid; details name it and say what is allowed", None),
    429: ("Too many open streams for this user; close one or retry later", _RETRY_AFTER),
    503: ("The database is unreachable; retry after Retry-After", _RETRY_AFTER),
}


def documented(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these error statuses, in the error shape."""
    responses: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        description, headers = _STATUSES[status]
        responses[status] = {"model": ErrorOut, "description": description}
        if headers:
            responses[status]["headers"] = headers
    return responses


class ApiError(Exception):
    """Raise anywhere in a request to answer ``status`` with this code and message."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.details, self.headers = details, headers


def not_found(what: str) -> ApiError:
    """404 for a missing (or, to a non-owner, invisible) ``what``: "no such job"."""
    return ApiError(404, "not_found", f"no such {what}")


def error_response(
    status: int,
    code: str,
    message: str,
    details: Any = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "details": details}}
    return JSONResponse(body, status_code=status, headers=headers)


def _field_path(loc: tuple[Any, ...]) -> str:
    # Drop "body" and tagged-union tags are kept out by the JobSpec's own
    # formatter; here a plain dotted path is enough. A list index reads as
    # seeds[2], the way it is written in the request.
    path = ""
    for part in loc:
        if part in ("body", "query", "path", "header"):
            continue
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path or ("body" if loc[:1] == ("body",) else "request")


def validation_details(errors: list[dict[str, Any]]) -> list[dict[str, str]]:
    return [
        {"field": _field_path(tuple(e["loc"])), "message": e["msg"].removeprefix("Value error, ")}
        for e in errors
    ]


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)

    @app.exception_handler(UnknownCallerError)
    async def _caller_gone(request: Request, exc: UnknownCallerError) -> JSONResponse:
        # The user was deleted while its token was cached: forget it, answer as the
        # token itself is answered now.
        request.app.state.token_cache.forget_user(exc.caller.id)
        return error_response(401, "unauthenticated", str(exc), headers=UNAUTHENTICATED)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        syntax = next((e for e in errors if e.get("type") == "json_invalid"), None)
        if syntax is not None:  # a body FastAPI parsed itself (routes outside /v1)
            message = f"not valid JSON: {(syntax.get('ctx') or {}).get('error', 'decode error')}"
            return error_response(
                400, "invalid_json", f"body: {message}", [{"field": "body", "message": message}]
            )
        details = validation_details(errors)
        summary = "; ".join(f"{d['field']}: {d['message']}" for d in details[:5])
        return error_response(422, "invalid_request", summary, details)

    @app.exception_handler(UnfitRequestError)
    async def _unfit(_: Request, exc: UnfitRequestError) -> JSONResponse:
        return error_response(422, "invalid_request", str(exc), exc.problems)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail), None, exc.headers)

    @app.exception_handler(OperationalError)
    async def _db_down(_: Request, exc: OperationalError) -> JSONResponse:
        log.warning("database unavailable: %s", exc.orig)
        return error_response(
            503,
            "database_unavailable",
            "the database is not reachable; retry shortly",
            headers={"Retry-After": str(DB_RETRY_AFTER_SECONDS)},
        )

    @app.exception_handler(DBAPIError)
    async def _db_error(_: Request, exc: DBAPIError) -> JSONResponse:
        if exc.connection_invalidated:
            return error_response(
                503,
                "database_unavailable",
                "the database connection was lost; retry shortly",
                headers={"Retry-After": str(DB_RETRY_AFTER_SECONDS)},
            )
        log.exception("database error")
        return error_response(500, "internal_error", "internal server error", headers=CLOSE)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return error_response(500, "internal_error", "internal server error", headers=CLOSE)
