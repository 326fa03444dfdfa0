"""Event streams and followed logs: each user holds a bounded number of them."""

from __future__ import annotations

import threading
import time
from collections import Counter

from server.api.errors import ApiError
from server.api.follow import JobWatcher


class SlowCounter(Counter):
    """A count that lets other threads run between reading a user's count and
    writing it back, as a thread switch at the wrong moment would."""

    def __getitem__(self, key: int) -> int:
        value = super().__getitem__(key)
        time.sleep(0.002)
        return value


def test_the_stream_limit_holds_when_requests_arrive_at_once():
    """Stream routes run on worker threads, releases on the event loop: two
    requests at once must not both take a user's last slot, and the count
    must not drift."""
    watcher = JobWatcher(None, interval=0.5, per_user=1)  # type: ignore[arg-type]
    watcher._streams = SlowCounter()
    admitted, refused = [], []
    barrier = threading.Barrier(8)

    def take() -> None:
        barrier.wait()
        try:
            admitted.append(watcher.reserve(7))
        except ApiError:
            refused.append(1)

    run_threads(take, 8)
    assert (len(admitted), len(refused)) == (1, 7)
    admitted[0]()
    assert watcher.open_streams(7) == 0

    watcher.per_user = 100
    failures = []

    def open_and_close() -> None:
        try:
            for _ in range(10):
                watcher.reserve(7)()
        except Exception as exc:  # a count that drifted below zero, a KeyError
            failures.append(exc)

    run_threads(open_and_close, 8)
    assert failures == [] and watcher.open_streams(7) == 0


def run_threads(target, count: int) -> None:
    threads = [threading.Thread(target=target) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
