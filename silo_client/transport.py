"""The HTTP side of ``SiloClient``: the bearer token, retries of 503s and refused
connections, errors as ``SiloApiError``, and answers parsed into the contract's
models, page after page."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from silo_client.errors import SiloApiError, SiloConnectionError, SiloError
from silo_contract.files import FilePage
from silo_contract.jobs import JobPage
from silo_contract.studies import StudyPage

HELD_ANSWERS = 256  # GET answers kept for If-None-Match, the most recent ones
M = TypeVar("M", bound=BaseModel)
Item = TypeVar("Item", bound=BaseModel)


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header; None for an HTTP date or garbage (backoff then)."""
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


class ApiTransport:
    """A connection to the API with a user's bearer token.

    503 answers (the server's database is away) and refused connections are
    retried ``retries`` times, waiting Retry-After (at most ``max_wait``
    seconds) or an exponential backoff; other errors raise at once.
    """

    def __init__(
        self,
        base_url: str,
        token: str | None,
        *,
        timeout: float | httpx.Timeout = 30.0,
        retries: int = 3,
        backoff: float = 0.5,
        max_wait: float = 30.0,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.base_url = base_url.rstrip("/")
        self.retries, self.backoff, self.max_wait = retries, backoff, max_wait
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)
        # The latest answer (ETag, body) to each GET, asked again with If-None-Match.
        self._held: OrderedDict[tuple[str, tuple[tuple[str, str], ...]], tuple[str, bytes]] = (
            OrderedDict()
        )

    @classmethod
    def from_config(
        cls, server: str | None = None, token: str | None = None, **kwargs: Any
    ) -> Self:
        """A client for the configured server (flags > SILO_* env > config file > local)."""
        from silo_client.config import resolve

        config = resolve(server=server, token=token)
        return cls(config.server, config.token, **kwargs)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _delay(self, attempt: int, response: httpx.Response | None) -> float:
        hinted = _retry_after(response.headers.get("Retry-After")) if response else None
        delay = hinted if hinted is not None else self.backoff * 2**attempt
        return min(delay, self.max_wait)

    def _send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        content: Iterator[bytes] | None = None,
        headers: Mapping[str, str] | None = None,
        stream: bool = False,
        timeout: httpx.Timeout | None = None,
    ) -> httpx.Response:
        """Send with retries; the response is a success (an error raises SiloApiError).
        A ``content`` stream is sent again only if no connection was ever made (a 503
        after it was read is raised, not retried)."""
        query = {k: v for k, v in (params or {}).items() if v is not None}
        extra: dict[str, Any] = {"timeout": timeout} if timeout is not None else {}
        request = self._http.build_request(
            method, path, params=query, json=json, content=content, headers=headers, **extra
        )
        # A request that may have reached the server is sent again only when a
        # repeat cannot do the work twice: reads, and submits with an Idempotency-Key.
        resendable = method in ("GET", "HEAD") or "Idempotency-Key" in request.headers
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                response = self._http.send(request, stream=stream)
            except httpx.TransportError as exc:
                never_sent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
                if last or not (never_sent or resendable):
                    reason = str(exc) or type(exc).__name__
                    raise SiloConnectionError(f"cannot reach {self.base_url}: {reason}") from None
                time.sleep(self._delay(attempt, None))
                continue
            # A streamed body was read by the server already: it cannot be sent again.
            if response.status_code == 503 and not last and content is None:
                delay = self._delay(attempt, response)
                response.close()
                time.sleep(delay)
                continue
            if response.is_error:
                raise self._error(response)
            return response
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _get_current(
        self,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        timeout: httpx.Timeout | None = None,
    ) -> bytes:
        """GET ``path``; when an answer to it is held, send its ETag (If-None-Match)
        and reuse the answer on 304. ``wait`` in ``params`` makes it a watch."""
        shown = tuple(sorted((k, str(v)) for k, v in (params or {}).items() if v is not None))
        key = (path, tuple(item for item in shown if item[0] != "wait"))
        held = self._held.get(key)
        headers = {"If-None-Match": held[0]} if held is not None else None
        response = self._send("GET", path, params=params, headers=headers, timeout=timeout)
        if response.status_code == 304 and held is not None:
            self._held.move_to_end(key)
            return held[1]
        etag = response.headers.get("ETag")
        if etag and response.status_code == 200:
            self._held[key] = (etag, response.content)
            self._held.move_to_end(key)
            while len(self._held) > HELD_ANSWERS:
                self._held.popitem(last=False)
        return response.content

    @staticmethod
    def _error(response: httpx.Response) -> SiloApiError:
        try:
            response.read()
            body = response.json()
        except (ValueError, httpx.HTTPError):
            body = None
        finally:
            response.close()
        return SiloApiError.from_body(response.status_code, response.reason_phrase, body)

    def _call(self, model: type[M], method: str, path: str, **kwargs: Any) -> M:
        if method == "GET":
            content = self._get_current(path, **kwargs)
        else:
            content = self._send(method, path, **kwargs).content
        try:
            return model.model_validate_json(content)
        except ValidationError as exc:
            # Not the API this client knows (another service, or an incompatible version).
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            raise SiloError(
                f"unexpected answer from {self.base_url}{path}: {where}: {first['msg']}"
            ) from None

    def _pages(
        self,
        path: str,
        page: type[JobPage] | type[StudyPage] | type[FilePage],
        params: dict[str, Any],
    ) -> Iterator[Any]:
        """Every item of a cursor-paged list, one page request at a time."""
        cursor = None
        while True:
            answer = self._call(page, "GET", path, params={**params, "cursor": cursor})
            yield from answer.items
            if not answer.next_cursor:
                return
            cursor = answer.next_cursor
