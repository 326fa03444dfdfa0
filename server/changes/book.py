"""What changed, as one process knows it: whether an answer it gave is still current.

A transaction that changes what an answer shows names the keys it changed
(server/changes/tracking.py): ``job:<id>`` for a job, its tags and its cycle
rows; ``jobs`` for any job (lists); ``queue`` when the queue's membership or
order moved (a queued job's place); ``study:<id>`` and ``studies``;
``user:<id>`` for a user's flags and tokens; ``*`` for everything.

The book turns those keys into generations: every ``mark`` takes the next
number of one counter and stamps it on the keys it names. An answer read after
``now()`` returned ``start`` is current as long as none of the keys it depends
on was stamped later than ``start``. A stamp that arrives while the read is in
flight makes the answer stale at once, so a read can never cache a state that
a change committed during it has replaced.

The book is only as good as the news it gets. On PostgreSQL every process
hears every commit through LISTEN/NOTIFY (server/changes/listener.py); while
that connection is down the book ``lose_track``s and knows nothing, so every
request reads the database. On SQLite the serving process is the only writer,
its own commits are its news, and the book is trusted from the start.

Watches (``wait``) are woken by the marks of their keys. Marks come from worker
threads (commits) and the listener's thread, so waking goes through the
waiter's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field

ALL = "*"
JOBS = "jobs"
QUEUE = "queue"
STUDIES = "studies"


JOB_KEY_PREFIX = "job:"


def job_key(job_id: int) -> str:
    return f"{JOB_KEY_PREFIX}{job_id}"


def new_job_keys(job_id: int) -> tuple[str, ...]:
    """What a new queued job changes: itself, the lists, the queue."""
    return (job_key(job_id), JOBS, QUEUE)


def study_key(study_id: int) -> str:
    return f"study:{study_id}"


USER_KEY_KIND = "user"


def user_key(user_id: int) -> str:
    return f"{USER_KEY_KIND}:{user_id}"


@dataclass(eq=False)
class _Waiter:
    loop: asyncio.AbstractEventLoop
    event: asyncio.Event = field(default_factory=asyncio.Event)

    def wake(self) -> None:
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
            self.loop.call_soon_threadsafe(self.event.set)


class ChangeBook:
    """Generations of the keys that changed, for one process."""

    def __init__(self, *, trusted: bool, max_keys: int = 200_000) -> None:
        self._lock = threading.Lock()
        self._counter = 0
        self._stamps: dict[str, int] = {}
        # Answers read before the floor are not trusted; None: nothing is (no news).
        self._floor: int | None = 0 if trusted else None
        self._max_keys = max_keys
        self._waiters: dict[str, set[_Waiter]] = {}
        self._observers: list[Callable[[Collection[str]], None]] = []
        self.closed = False

    # --- reading -----------------------------------------------------------------

    def now(self) -> int:
        """The generation an answer read from now on starts at."""
        with self._lock:
            return self._counter

    @property
    def tracking(self) -> bool:
        """Whether the book hears every change (else nothing it knows is current)."""
        return self._floor is not None

    def current(self, keys: Iterable[str], start: int) -> bool:
        """Whether nothing an answer read at ``start`` depends on (``keys``) changed since."""
        with self._lock:
            return self._current(keys, start)

    def _current(self, keys: Iterable[str], start: int) -> bool:
        if self._floor is None or start < self._floor:
            return False
        stamps = self._stamps
        if stamps.get(ALL, 0) > start:
            return False
        return all(stamps.get(key, 0) <= start for key in keys)

    # --- news ----------------------------------------------------------------------

    def mark(self, keys: Collection[str]) -> None:
        """``keys`` changed (a commit, here or in another process)."""
        if not keys:
            return
        with self._lock:
            self._counter += 1
            if len(self._stamps) >= self._max_keys:
                # Forget every stamp at once: the floor makes every older answer
                # stale, which is what forgetting their stamps must mean.
                self._stamps.clear()
                if self._floor is not None:
                    self._floor = self._counter
            for key in keys:
                self._stamps[key] = self._counter
            woken = self._take_waiters(None if ALL in keys else keys)
            observers = list(self._observers)
        for waiter in woken:
            waiter.wake()
        for observer in observers:
            observer(keys)

    def lose_track(self) -> None:
        """News may be missed from now on: trust nothing until ``regain_track``."""
        with self._lock:
            self._floor = None
            self._stamps.clear()
            woken = self._take_waiters(None)
        for waiter in woken:
            waiter.wake()

    def regain_track(self) -> None:
        """News arrives again; what was read before may have missed some."""
        with self._lock:
            self._counter += 1
            self._floor = self._counter
            observers = list(self._observers)
        for observer in observers:
            observer({ALL})

    def observe(self, observer: Callable[[Collection[str]], None]) -> None:
        """Call ``observer`` with the keys of every mark (``{"*"}`` after a gap in the news)."""
        with self._lock:
            self._observers.append(observer)

    # --- watches ---------------------------------------------------------------------

    async def wait(self, keys: Collection[str], start: int, timeout: float) -> bool:
        """Until one of ``keys`` changes after ``start``: True then (or at once if one
        already has, or the book lost track or closed), False after ``timeout`` seconds."""
        waiter = _Waiter(asyncio.get_running_loop())
        with self._lock:
            if self.closed or not self._current(keys, start):
                return True
            for key in keys:
                self._waiters.setdefault(key, set()).add(waiter)
        try:
            await asyncio.wait_for(waiter.event.wait(), timeout)
            return True
        except TimeoutError:
            return False
        finally:
            with self._lock:
                for key in keys:
                    waiting = self._waiters.get(key)
                    if waiting is not None:
                        waiting.discard(waiter)
                        if not waiting:
                            del self._waiters[key]

    def close(self) -> None:
        """The server is stopping: every watch answers now, and new ones do not wait."""
        with self._lock:
            self.closed = True
            woken = self._take_waiters(None)
        for waiter in woken:
            waiter.wake()

    def watching(self) -> int:
        """How many watches wait now (each counted once)."""
        with self._lock:
            return len({id(w) for waiting in self._waiters.values() for w in waiting})

    def _take_waiters(self, keys: Iterable[str] | None) -> set[_Waiter]:
        """The waiters of ``keys`` (all of them for None), no longer registered."""
        if keys is None:
            woken = {w for waiting in self._waiters.values() for w in waiting}
            self._waiters.clear()
            return woken
        woken = set()
        for key in keys:
            woken |= self._waiters.pop(key, set())
        return woken
