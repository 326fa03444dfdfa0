"""The API under uvicorn, as `silo serve` runs it and the tests' live server too.

Request heads are limited while they arrive. Neither HTTP implementation does
it for us: httptools buffers a header value whole, copying it on every read,
before it calls back (one 50 MiB header line stalled every request for 1.6 s,
and ten at once held 600 MiB), and h11 refuses at 16 KiB with a plain 400.
The protocol classes here count the bytes received while a request's head is
incomplete and, past ``SILO_MAX_HEADER_BYTES``, answer 431
(``headers_too_large`` in the API's error shape) and close the connection.
They count after the parser has been fed, so a body that arrives in the same
read as its head is never taken for head. A read is at most 256 KiB, so what a
connection holds of a head stays under the limit plus one read; a head that
arrives whole in one read is measured by ``server.limits.HeaderSizeLimit``.

``silo serve --workers N`` runs N such servers in processes uvicorn spawns,
sharing one listening socket: ``WorkerConfig`` is what each of them is given.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import Any, ClassVar

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from server.limits import headers_too_large_body
from server.settings import Settings

log = logging.getLogger("silo.server")

HTTP_IMPLEMENTATIONS = ("auto", "httptools", "h11")
# h11's own limit on an incomplete head (a plain 400) sits above ours by more
# than one read, so ours always answers first.
H11_SLACK_BYTES = 1 << 20
# After the 431 the connection is half-closed and reading stops; it is closed
# this much later, so a client busy sending first gets to read the answer.
LINGER_SECONDS = 1.0


class _HeadLimit:
    """What both protocols share: the limit and the 431 itself, and the end of
    the app's streams when the server stops."""

    max_header_bytes: ClassVar[int] = 65_536
    # A tuple, not a bare function: a function class attribute would become a method.
    shutdown_hooks: ClassVar[tuple[Callable[[], None], ...]] = ()
    transport: asyncio.Transport
    server_state: Any
    loop: asyncio.AbstractEventLoop
    client: tuple[str, int] | None

    def shutdown(self) -> None:
        # uvicorn asks each connection to finish as it starts to stop, then
        # waits for them all; a stream would keep it waiting until its job ends.
        for hook in self.shutdown_hooks:
            hook()
        super().shutdown()  # type: ignore[misc]

    def _answer_431(self) -> None:
        transport = self.transport
        if transport.is_closing():
            return
        body = headers_too_large_body(self.max_header_bytes)
        lines = [b"HTTP/1.1 431 Request Header Fields Too Large\r\n"]
        for name, value in self.server_state.default_headers:
            lines.append(name + b": " + value + b"\r\n")
        lines += [
            b"content-type: application/json\r\n",
            b"content-length: " + str(len(body)).encode() + b"\r\n",
            b"connection: close\r\n\r\n",
            body,
        ]
        transport.write(b"".join(lines))
        if transport.can_write_eof():
            transport.write_eof()
        transport.pause_reading()
        self.loop.call_later(LINGER_SECONDS, transport.close)
        log.debug("%s: request head over %d bytes refused", self.client, self.max_header_bytes)


class HeadLimitedH11Protocol(_HeadLimit, H11Protocol):
    """uvicorn's h11 protocol with a limit on request heads.

    ``conn.their_state is h11.IDLE`` after a read means h11 holds the start of
    a head it cannot parse yet: exactly the bytes of that read, added to the
    count, unless a request ended or began in the same read, when the count
    starts again from what h11 holds.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes: int | None = None  # None: no head pending

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():
            return
        idle_before, cycle_before = self.conn.their_state is h11.IDLE, self.cycle
        super().data_received(data)
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            self._head_bytes = None
            return
        if self._head_bytes is None or not idle_before or self.cycle is not cycle_before:
            self._head_bytes = len(self.conn.trailing_data[0])
        else:
            self._head_bytes += len(data)
        if self._head_bytes > self.max_header_bytes:
            self._answer_431()  # their IDLE means both are: no response in flight

    def on_response_complete(self) -> None:
        # A pipelined head that arrived during the response was held unparsed.
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._head_bytes = len(self.conn.trailing_data[0])
            if self._head_bytes > self.max_header_bytes:
                self._answer_431()


try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # httptools is not installed: h11 only
    HeadLimitedHttpToolsProtocol: type[asyncio.Protocol] | None = None
else:

    class _HeadLimitedHttpToolsProtocol(_HeadLimit, HttpToolsProtocol):
        """uvicorn's httptools protocol with a limit on request heads.

        ``on_message_begin`` starts a head and ``on_headers_complete`` ends
        it. A head still pending after a read that did not start it grew by
        the whole read; one that started in the read is the whole read too,
        unless another request ended earlier in it (pipelining), when it is
        counted from the next read on.
        """

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._head_pending = False
            self._head_bytes = 0
            self._began_in_read = self._ended_in_read = False
            self._refused = False

        def data_received(self, data: bytes) -> None:
            if self._refused or self.transport.is_closing():
                return  # refused: nothing more of this connection is parsed
            self._began_in_read = self._ended_in_read = False
            super().data_received(data)
            if not self._head_pending or self.transport.is_closing():
                return
            if not self._began_in_read:
                self._head_bytes += len(data)
            elif not self._ended_in_read:
                self._head_bytes = len(data)
            if self._head_bytes > self.max_header_bytes:
                self._refuse()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._head_pending, self._head_bytes, self._began_in_read = True, 0, True

        def on_headers_complete(self) -> None:
            self._head_pending = False
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self._ended_in_read = True
            super().on_message_complete()

        def _refuse(self) -> None:
            self._refused = True
            if self.cycle is None or self.cycle.response_complete:
                self._answer_431()
            else:  # a pipelined head: answered once the responses before it are out
                self.flow.pause_reading()

        def on_response_complete(self) -> None:
            if self._refused and not self.pipeline:
                self.server_state.total_requests += 1
                self._answer_431()
                return
            super().on_response_complete()

    HeadLimitedHttpToolsProtocol = _HeadLimitedHttpToolsProtocol


def protocol_class(
    http: str, max_header_bytes: int, on_shutdown: Callable[[], None] | None = None
) -> type[asyncio.Protocol]:
    """The HTTP protocol for uvicorn's ``--http`` choice, limiting heads to ``max_header_bytes``.

    ``auto`` is httptools when it is installed, else h11, as in uvicorn.
    ``on_shutdown`` is called (once per open connection) as the server starts to stop.
    """
    if http not in HTTP_IMPLEMENTATIONS:
        raise ValueError(f"http must be one of {', '.join(HTTP_IMPLEMENTATIONS)}, not {http!r}")
    base: type[asyncio.Protocol]
    if http == "h11" or (http == "auto" and HeadLimitedHttpToolsProtocol is None):
        base = HeadLimitedH11Protocol
    elif HeadLimitedHttpToolsProtocol is None:
        raise ValueError("httptools is not installed (pip install httptools)")
    else:
        base = HeadLimitedHttpToolsProtocol
    attributes = {
        "max_header_bytes": max_header_bytes,
        "shutdown_hooks": () if on_shutdown is None else (on_shutdown,),
    }
    return type(base.__name__, (base,), attributes)


def _end_streams(app: Any) -> Callable[[], None]:
    """Ends ``app``'s event streams and followed logs (server/api/follow.py)."""

    def end() -> None:
        watcher = getattr(getattr(app, "state", None), "watcher", None)
        if watcher is not None:
            watcher.close()

    return end


def uvicorn_config(
    app: Any,
    settings: Settings,
    *,
    host: str,
    port: int,
    http: str = "auto",
    log_level: str = "info",
    access_log: bool = True,
) -> uvicorn.Config:
    """uvicorn's Config for the API: the protocol for ``http`` and the settings' limits;
    the app's streams end when the server stops."""
    return uvicorn.Config(
        app,
        http=protocol_class(http, settings.max_header_bytes, _end_streams(app)),
        **_server_options(settings, host, port, log_level, access_log),
    )


def _server_options(
    settings: Settings, host: str, port: int, log_level: str, access_log: bool
) -> dict[str, Any]:
    """What one process and the workers of several are configured with alike."""
    return {
        "host": host,
        "port": port,
        "h11_max_incomplete_event_size": settings.max_header_bytes + H11_SLACK_BYTES,
        "lifespan": "on",
        "log_level": log_level,
        "access_log": access_log,
    }


class WorkerConfig(uvicorn.Config):
    """uvicorn's Config for the worker processes of ``silo serve --workers N``.

    uvicorn's supervisor (``uvicorn.supervisors.Multiprocess``) spawns each worker
    and pickles this Config into it. Neither the app nor the class
    ``protocol_class`` makes (with ``type()``) can be pickled, so this Config
    carries the settings and the HTTP implementation's name, and ``load()``,
    which uvicorn calls in the worker, builds from them what ``uvicorn_config``
    gives the single process: the app, and the protocol that limits request
    heads and ends that app's streams when the worker stops.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        host: str,
        port: int,
        workers: int,
        http: str = "auto",
        log_level: str = "info",
        access_log: bool = True,
    ) -> None:
        # Refuse a bad ``http`` (or httptools missing) here, not in every worker.
        protocol_class(http, settings.max_header_bytes)
        super().__init__(
            "server.app:create_app",  # what load() calls, with these settings
            factory=True,
            workers=workers,
            http=http,
            **_server_options(settings, host, port, log_level, access_log),
        )
        self.silo_settings = settings
        self.silo_http = http
        self.supervisor_pid = os.getpid()

    def load(self) -> None:
        from server.app import create_app

        _exit_with_supervisor(self.supervisor_pid)
        app = create_app(self.silo_settings)
        self.app, self.factory = app, False
        self.http = protocol_class(
            self.silo_http, self.silo_settings.max_header_bytes, _end_streams(app)
        )
        super().load()


def _exit_with_supervisor(supervisor_pid: int) -> None:
    """On Linux, have the kernel send this worker SIGTERM when its supervisor dies,
    however it dies (SIGKILL too), so that no worker outlives it and keeps the port."""
    if not sys.platform.startswith("linux") or os.getpid() == supervisor_pid:
        return
    import ctypes

    pr_set_pdeathsig = 1
    try:
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    except (OSError, AttributeError):  # no prctl: the supervisor's SIGTERM alone
        return
    if os.getppid() != supervisor_pid:  # it died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)
