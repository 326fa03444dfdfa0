"""Conditional reads and watches: ``ETag``, ``If-None-Match``, 304 and ``?wait=``.

Every job, job list page, cycle table, study and study list page is answered
with an ``ETag``: a digest of what the answer shows, so it changes with every
change of it and is the same whichever API process answers. The tag is weak
(``W/"..."``) because the answer also holds two numbers counted to the moment
it is made, a running job's ``elapsed_seconds`` and ``eta_seconds``: they are
left out of the digest, and a 304 means that nothing else changed.

An answer this process gave is kept (``Answers``, the latest 10,000) for as
long as its ``ChangeBook`` (server/changes/book.py) says nothing it depends on
has changed since it was read. Asked again, it is given from memory, without
a statement or a thread hop: 304 if the request's ``If-None-Match`` holds its
tag, else 200 with the body, its clock fields counted anew from what was read.
Otherwise the answer is read, and still 304 if its tag is one the client holds.

``?wait=30s`` with a current tag makes the request a watch (a blocking query,
as Consul's and Kubernetes' watches are): it returns as soon as the answer
changes, or 304 when the wait is over. A waiting watch holds no database
connection and no thread: the book wakes it when one of its keys changes.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Coroutine, Hashable
from dataclasses import dataclass, replace
from typing import Annotated, Any

from fastapi import Header, Query, Request, Response
from pydantic import AfterValidator, BaseModel
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from server.api.access import Reader
from server.changes.book import ChangeBook

# Private: an answer depends on who asks. no-cache: a cache keeps it but asks
# again (If-None-Match) before every use.
CACHE_CONTROL = "private, no-cache"
MAX_WAIT_SECONDS = 300.0
UNTRACKED_POLL_SECONDS = 1.0  # a watch's pace while the book hears no news
MAX_TAGS = 32  # tags read from one If-None-Match
# The fields counted to the moment of the answer (server/api/job_out.progress_of).
CLOCK_FIELDS = {"elapsed_seconds", "eta_seconds"}
JOB_CLOCK: Any = {"progress": CLOCK_FIELDS}
ITEMS_CLOCK: Any = {"items": {"__all__": JOB_CLOCK}}
MEMBERS_CLOCK: Any = {"members": {"__all__": JOB_CLOCK}}

NOT_MODIFIED: dict[int | str, dict[str, Any]] = {
    304: {"description": "Not modified: If-None-Match holds the answer's current ETag"}
}

WAIT_PATTERN = r"^[0-9]{1,6}(\.[0-9]{1,3})?(ms|s|m)?$"
_WAIT = re.compile(WAIT_PATTERN)
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}


def wait_seconds(value: str | None) -> float | None:
    """A ``?wait=`` duration in seconds; a longer one than MAX_WAIT_SECONDS is
    shortened to it (as Consul does), so every duration the pattern allows is good."""
    if value is None:
        return None
    match = _WAIT.fullmatch(value)
    if match is None:  # the route's pattern refused it already
        raise ValueError("must be a duration such as 30s, 500ms or 2m")
    unit = match[2]
    number = float(value.removesuffix(unit) if unit else value)
    return min(number * _UNITS[unit], MAX_WAIT_SECONDS)


WaitParam = Annotated[
    str | None,
    Query(
        pattern=WAIT_PATTERN,
        max_length=12,
        description=(
            "With If-None-Match: wait up to this long (30s, 500ms, 2m; a number alone is "
            "seconds; longer than 300s counts as 300s) for the answer to change; 304 if it "
            "did not"
        ),
    ),
    AfterValidator(wait_seconds),
]
IfNoneMatch = Annotated[
    str | None,
    Header(max_length=4096, description="ETags of answers the client holds (answered 304)"),
]


def parse_tags(value: str | None) -> frozenset[str]:
    """The opaque tags of an If-None-Match header (weak or not: the comparison is weak)."""
    if not value:
        return frozenset()
    tags = (tag.strip() for tag in value.split(",", MAX_TAGS)[:MAX_TAGS])
    return frozenset(tag.removeprefix("W/") for tag in tags if tag)


def _digest(data: bytes) -> str:
    return f'W/"{hashlib.blake2b(data, digest_size=12).hexdigest()}"'


@dataclass(frozen=True)
class Reading:
    """An answer as read: its tag, the change keys it depends on, whose it is (None:
    whoever may call the route may read it) and its body, as read or, for an answer
    with clock fields, as ``render`` makes it anew from what was read (no I/O)."""

    body: bytes
    etag: str
    depends_on: frozenset[str]
    owner_id: int | None = None
    render: Callable[[], BaseModel] | None = None
    start: int = 0  # the book's generation when it was read (set by Answers)

    def shown_to(self, reader: Reader) -> bool:
        return self.owner_id is None or reader.may_read(self.owner_id)

    def fresh_body(self) -> bytes:
        return self.body if self.render is None else self.render().model_dump_json().encode()


def reading(
    render: Callable[[], BaseModel],
    depends_on: Collection[str],
    *,
    owner_id: int | None = None,
    clock: Any = None,
) -> Reading:
    """The answer ``render`` builds from what was read; ``clock`` names the fields
    counted to the moment of the answer, which its tag leaves out and which a
    later answer from memory counts anew (by calling ``render`` again)."""
    model = render()
    body = model.model_dump_json().encode()
    shown = model.model_dump_json(exclude=clock).encode() if clock else body
    return Reading(body, _digest(shown), frozenset(depends_on), owner_id, render if clock else None)


class Answers:
    """The answers this process gave lately, kept while they are current: one
    asked again is answered from memory, 304 if the client holds its tag."""

    def __init__(self, book: ChangeBook, max_entries: int = 10_000) -> None:
        self.book, self.max_entries = book, max_entries
        self._known: OrderedDict[Hashable, Reading] = OrderedDict()
        self._lock = threading.Lock()

    def _current(self, key: Hashable) -> Reading | None:
        with self._lock:
            known = self._known.get(key)
        if known is None or not self.book.current(known.depends_on, known.start):
            return None
        return known

    def _remember(self, key: Hashable, known: Reading) -> None:
        with self._lock:
            self._known[key] = known
            self._known.move_to_end(key)
            while len(self._known) > self.max_entries:
                self._known.popitem(last=False)

    async def answer(
        self,
        key: Hashable,
        read: Callable[[Session], Reading],
        *,
        request: Request,
        reader: Reader,
        if_none_match: str | None,
        wait: float | None = None,
    ) -> Response:
        """200 with the answer and its tag, or 304 when ``if_none_match`` holds the
        current tag, after waiting up to ``wait`` seconds for it to change.

        A current answer is given from memory, with no session at all. Otherwise
        ``read`` reads it on a session of its own on a worker thread (closed
        after the read: a watch holds no connection while it waits), raising for
        a missing or hidden resource.
        """
        sessions: sessionmaker = request.app.state.read_session_factory
        held = parse_tags(if_none_match)
        deadline = time.monotonic() + (wait or 0.0)
        while True:
            known = self._current(key)
            just_read = known is None or not known.shown_to(reader)
            if just_read:
                start = self.book.now()
                answer = await run_in_threadpool(_read_closing, read, sessions)
                known = replace(answer, start=start)
                self._remember(key, known)
            assert known is not None
            if not _holds(held, known.etag):
                # An answer just read is current as rendered; one from memory is
                # rendered anew, its clock fields counted to now.
                return _full(known.body if just_read else known.fresh_body(), known.etag)
            left = deadline - time.monotonic()
            if left <= 0 or self.book.closed:  # closed: the server is stopping
                return _not_modified(known.etag)
            if self.book.tracking:
                waiting = self.book.wait(known.depends_on, known.start, left)
            else:  # no news: look again now and then
                waiting = _sleep_then_look(min(left, UNTRACKED_POLL_SECONDS))
            if not await _unless_gone(request, waiting):
                return _not_modified(known.etag)


async def _sleep_then_look(seconds: float) -> bool:
    await asyncio.sleep(seconds)
    return True


async def _gone(request: Request) -> None:
    """Returns once the client has closed the connection."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _unless_gone(request: Request, waiting: Coroutine[Any, Any, bool]) -> bool:
    """``waiting``'s outcome, or False at once if the client goes away first: the
    server does not cancel a request whose client left, and a watch nobody reads
    must not hold its place (nor a stopping server) for the rest of its wait."""
    watch = asyncio.ensure_future(waiting)
    gone = asyncio.ensure_future(_gone(request))
    try:
        await asyncio.wait({watch, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (watch, gone):
            task.cancel()
    return watch.done() and not watch.cancelled() and watch.result()


def answer_afresh(model: BaseModel, if_none_match: str | None) -> Response:
    """An answer read for every request and never kept: one the change book cannot
    vouch for (it moves with the clock, or with rows no change key names). It
    still has its tag, and a client that holds it is answered 304, without a body."""
    known = reading(lambda: model, ())
    if _holds(parse_tags(if_none_match), known.etag):
        return _not_modified(known.etag)
    return _full(known.body, known.etag)


def _holds(held: frozenset[str], etag: str) -> bool:
    return etag[2:] in held or "*" in held


def _full(body: bytes, etag: str) -> Response:
    return Response(
        body, media_type="application/json", headers={"ETag": etag, "Cache-Control": CACHE_CONTROL}
    )


def _not_modified(etag: str) -> Response:
    return Response(status_code=304, headers={"ETag": etag, "Cache-Control": CACHE_CONTROL})


def _read_closing(read: Callable[[Session], Reading], sessions: sessionmaker) -> Reading:
    with sessions() as session:
        return read(session)


def page_key(kind: str, request: Request, reader: Reader) -> Hashable:
    """What a list page's answer is kept under: the list, the page's query, and
    whose resources the reader lists (the read policy may narrow it to their own)."""
    return (kind, request.url.query, reader.only_owner)


def answers(request: Request) -> Answers:
    answers: Answers = request.app.state.answers
    return answers
