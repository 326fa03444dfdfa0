"""Hearing the other processes' commits: LISTEN on PostgreSQL, on one connection.

One thread per process holds a connection outside the pool in autocommit,
``LISTEN``s on the channel every commit notifies (server/changes/tracking.py)
and marks what each notification names in the process's ``ChangeBook``. The
book trusts nothing until the LISTEN is in place, and again from the moment
the connection fails until it is back (a notification sent meanwhile is lost
for good); the thread reconnects with a growing pause, logging the outage
once and the recovery once.
"""

from __future__ import annotations

import logging
import threading

import psycopg
from sqlalchemy.engine import make_url

from server.changes.book import ChangeBook
from server.changes.tracking import CHANNEL, decode

log = logging.getLogger("silo.changes")

POLL_SECONDS = 0.1  # how often the thread looks whether it should stop (a stop waits this long)
MAX_PAUSE_SECONDS = 5.0


def libpq_url(url: str) -> str:
    """A SQLAlchemy PostgreSQL URL as libpq reads it (no ``+driver``)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class ChangeListener:
    """Feeds ``book`` with the notifications of every process's commits."""

    def __init__(self, url: str, book: ChangeBook) -> None:
        self.url, self.book = libpq_url(url), book
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="silo-change-listener", daemon=True)
        self.listening = threading.Event()  # set while the LISTEN is in place

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        pause, failing = 0.1, False
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True, connect_timeout=5) as connection:
                    connection.execute(f"LISTEN {CHANNEL}")
                    self.book.regain_track()
                    self.listening.set()
                    if failing:
                        log.warning("hearing other processes' changes again")
                    pause, failing = 0.1, False
                    self._listen(connection)
            except psycopg.Error as exc:
                if not failing:
                    log.warning(
                        "cannot hear other processes' changes (%s); every request reads the "
                        "database until this recovers",
                        exc,
                    )
                failing = True
            finally:
                self.listening.clear()
                self.book.lose_track()
            self._stop.wait(pause)
            pause = min(pause * 2, MAX_PAUSE_SECONDS)

    def _listen(self, connection: psycopg.Connection) -> None:
        while not self._stop.is_set():
            for note in connection.notifies(timeout=POLL_SECONDS):
                self.book.mark(decode(note.payload))
