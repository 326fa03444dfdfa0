"""HTTP methods as RFC 9110 has them, for every route: HEAD, OPTIONS and 405's Allow.

Routes declare GET, POST, ... only. This ASGI middleware adds, in front of
the router:

- HEAD on every GET route: the GET runs, its status and headers are sent,
  its body is not. A stream (events, a followed log) ends as soon as its
  headers are out, since the server then tells the response it is finished.
- OPTIONS on every path: 204 with ``Allow`` listing what the path accepts.
- ``Allow`` on a 405 listing the methods of every route of the path (the
  router alone names those of the first route it tried).
"""

from __future__ import annotations

import contextlib

from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


class _HeadersSent(Exception):
    """Raised into a HEAD's GET handler when it starts on the body nobody wants."""


class MethodSemantics:
    def __init__(self, app: ASGIApp, router_app: ASGIApp) -> None:
        self.app = app
        self.router = router_app  # the FastAPI app: its router knows the routes

    def allowed(self, scope: Scope) -> list[str]:
        """The methods the request's path accepts (empty: no route has the path)."""
        routes = self.router.router.routes  # type: ignore[attr-defined]
        found = set()
        for method in METHODS:
            probe = {**scope, "method": method}
            if any(route.matches(probe)[0] == Match.FULL for route in routes):
                found.add(method)
        if "GET" in found:
            found.add("HEAD")
        if found:
            found.add("OPTIONS")
        return sorted(found)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        if method == "OPTIONS":
            await self._options(scope, receive, send)
        elif method == "HEAD":
            await self._head(scope, receive, send)
        else:
            await self.app(scope, receive, self._allow_on_405(scope, send))

    async def _options(self, scope: Scope, receive: Receive, send: Send) -> None:
        allowed = self.allowed(scope)
        if not allowed:
            await self.app(scope, receive, send)  # the router's 404
            return
        headers = [(b"allow", ", ".join(allowed).encode()), (b"content-length", b"0")]
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    async def _head(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def headers_only(message: Message) -> None:
            if message["type"] != "http.response.start":
                raise _HeadersSent  # the body is not wanted: stop making it
            await send(message)
            # Complete the response at once: the connection is free for the next
            # request, and a stream waiting for its first event is told the
            # client is gone.
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        # The server's own scope keeps "HEAD", so it sends no body bytes and keeps
        # the GET's Content-Length.
        as_get = {**scope, "method": "GET"}
        with contextlib.suppress(_HeadersSent):
            await self.app(as_get, receive, self._allow_on_405(scope, headers_only))

    def _allow_on_405(self, scope: Scope, send: Send) -> Send:
        async def send_with_allow(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 405:
                allowed = ", ".join(self.allowed(scope)).encode()
                headers = [(k, v) for k, v in message["headers"] if k.lower() != b"allow"]
                message = {**message, "headers": [*headers, (b"allow", allowed)]}
            await send(message)

        return send_with_allow
