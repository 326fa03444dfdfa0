"""Reporting an attempt's progress to the API, surviving the API being away.

Every report (a batch of epoch events, a cycle's result, an artifact, a final
status) is first appended to a spool file beside the attempt's checkpoint and
fsynced; a background thread then delivers the spool in order to the API's
intake endpoints with the attempt's token, and records how far it got. While
the API or its database is down the engine keeps training, the spool grows,
and the thread retries with capped exponential backoff (honouring
Retry-After); when the API answers again the backlog goes out in order. While
it backs off because the API is away (no connection, 502, 503, 504) it asks
the API's ``GET /readyz`` (no token) about once a second and retries as soon
as that answers 200, so a long outage's backoff does not delay the backlog
once the API is back.

The intake writes are idempotent upserts keyed by (job, attempt, cycle, epoch),
so delivering a report twice (a crash between a delivery and its record) is
harmless: nothing is lost and nothing counts twice.

A 409 ``attempt_superseded`` (or a 401: the attempt's token is dead) means a
newer attempt owns the job: the reporter stops delivering and raises its
``superseded`` flag, which the engine's stop check reads.

Any other 4xx (or a report that cannot even be encoded, such as a NaN loss)
would be refused again on every retry: the report is logged and dropped (kept
in ``dropped``) and delivery goes on with the next one, so one bad report
never blocks the attempt's later reports. A refused batch of epoch events is
sent again one event at a time, so only the bad events are dropped.

A heartbeat (``running``, not spooled) carries the job's progress note and
answers whether a user asked to cancel the job. The engine asks at every
epoch boundary (``should_stop``, synchronously, at most every
``heartbeat_seconds``), so a cancel is obeyed at the first boundary after
it; the delivery thread also sends one while idle. Once the attempt's final
status (succeeded, failed, cancelled) is spooled no heartbeat is sent: the
API ends the attempt when that status arrives, and a heartbeat after it would
be refused as if a newer attempt owned the job (a 409 answering a heartbeat
that raced the final status is therefore not taken as superseded).
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from silo_contract.fields import NOTE_LENGTH
from silo_contract.reports import CycleResult, EpochEvent

log = logging.getLogger("silo.workers.reporter")

MAX_EVENTS_PER_POST = 500  # the intake's batch limit
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
# Retried statuses that say the API (or its database) is away rather than busy:
# while backing off from these, the API's readiness is asked about.
AWAY_STATUSES = frozenset({502, 503, 504})
FINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})


@dataclass(frozen=True)
class Report:
    index: int  # 0-based line number in the spool
    kind: str  # "events" | "cycle" | "artifact" | "status"
    body: dict[str, Any]


class ReportSpool:
    """Reports as lines of JSON on disk, plus the number already delivered.

    Appends are fsynced, so a report the engine has made survives a crash of
    the worker process; the delivered count is replaced atomically.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / "reports.jsonl"
        self._delivered_path = self.folder / "reports.delivered"
        self._lock = threading.Lock()
        self._count = 0
        self.finished = False  # a final status is spooled
        for line in self._lines():
            self._count += 1
            self.finished = self.finished or _is_final(json.loads(line))

    def _lines(self) -> Iterator[str]:
        if not self.path.exists():
            return
        with self.path.open(encoding="utf-8") as handle:
            for line in handle:
                if line.endswith("\n"):  # a torn last line (crash mid-write) is skipped
                    yield line

    def append(self, kind: str, body: dict[str, Any]) -> None:
        entry = {"kind": kind, "body": body}
        line = json.dumps(entry, separators=(",", ":")) + "\n"
        # Raised before the line is written, so a heartbeat in flight now may
        # meet the final status already delivered (see ApiReporter._heartbeat).
        self.finished = self.finished or _is_final(entry)
        with self._lock, self.path.open("a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
            self._count += 1

    def __len__(self) -> int:
        return self._count

    @property
    def delivered(self) -> int:
        try:
            return int(self._delivered_path.read_text())
        except (FileNotFoundError, ValueError):
            return 0

    def mark_delivered(self, count: int) -> None:
        temporary = self._delivered_path.with_suffix(".tmp")
        temporary.write_text(str(count))
        os.replace(temporary, self._delivered_path)

    def pending(self) -> list[Report]:
        start = self.delivered
        reports = []
        for index, line in enumerate(self._lines()):
            if index >= start:
                entry = json.loads(line)
                reports.append(Report(index, entry["kind"], entry["body"]))
        return reports


class IntakeClient:
    """The attempt's side of the intake endpoints (plain httpx, no server imports)."""

    def __init__(
        self,
        api_url: str,
        job_id: int,
        attempt: int,
        token: str,
        *,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.prefix = f"/v1/jobs/{job_id}/attempts/{attempt}"
        self.http = httpx.Client(
            base_url=api_url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
            transport=transport,
        )

    def post(self, kind: str, body: dict[str, Any]) -> httpx.Response:
        path = {"events": "events", "cycle": "cycles", "artifact": "artifacts", "status": "status"}
        return self.http.post(f"{self.prefix}/{path[kind]}", json=body)

    def ready(self, timeout: float = 2.0) -> bool:
        """Whether the API answers ``GET /readyz`` with 200 (asked without the token)."""
        request = self.http.build_request("GET", "/readyz", timeout=timeout)
        del request.headers["Authorization"]
        try:
            return self.http.send(request).status_code == 200
        except httpx.HTTPError:
            return False

    def close(self) -> None:
        self.http.close()


class SupersededError(RuntimeError):
    """The API says a newer attempt owns the job."""


class ApiReporter:
    """The engine's Reporter: spool first, deliver in order in the background."""

    def __init__(
        self,
        client: IntakeClient,
        spool: ReportSpool,
        *,
        first_backoff: float = 0.5,
        max_backoff: float = 30.0,
        heartbeat_seconds: float = 0.25,
        probe_seconds: float = 1.0,
    ) -> None:
        self.client, self.spool = client, spool
        self.first_backoff, self.max_backoff = first_backoff, max_backoff
        self.heartbeat_seconds = heartbeat_seconds
        self.probe_seconds = probe_seconds  # how often /readyz is asked while the API is away
        self._last_heartbeat = 0.0
        self._note: str | None = None
        self.superseded = False
        self.cancel_requested = False
        self.dropped: list[tuple[Report, str]] = []  # refused (4xx) or unsendable: for the log
        self._wake = threading.Event()
        self._idle = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._deliver_forever, name="silo-reporter")
        self._thread.daemon = True
        self._thread.start()

    # --- what the engine and the worker call ---------------------------------

    def on_epoch(self, event: EpochEvent) -> None:
        self._add("events", event.to_dict())

    def on_cycle(self, result: CycleResult) -> None:
        log.info(
            "cycle %d done: sparsity %.4f, max_lr %.5f, test accuracy %.4f at best val, %.1f s",
            result.cycle,
            result.sparsity,
            result.max_lr,
            result.test_accuracy_at_best_val,
            result.seconds,
        )
        self._add("cycle", result.to_dict())

    def on_note(self, note: str | None) -> None:
        """What the job does while no epoch is reported; the next heartbeat
        carries it (not spooled: only the latest note matters)."""
        self._note = note[:NOTE_LENGTH] if note else None

    def artifact(self, name: str, size: int, checksum: str, location: str) -> None:
        self._add(
            "artifact", {"name": name, "size": size, "checksum": checksum, "location": location}
        )

    def status(self, status: str, message: str | None = None) -> None:
        self._add("status", {"status": status, "message": message})

    def adopt(self, earlier: ReportSpool) -> int:
        """Take over an earlier attempt's undelivered progress (events and cycle
        results, not its status or artifacts), to be reported as this attempt's.

        A worker killed after spooling an epoch and writing its checkpoint, but
        before delivering the epoch, would otherwise lose it: the next attempt
        resumes after that checkpoint and never runs the epoch again.
        """
        taken = [r for r in earlier.pending() if r.kind in ("events", "cycle")]
        for report in taken:
            self._add(report.kind, report.body)
        earlier.mark_delivered(len(earlier))
        return len(taken)

    def should_stop(self) -> bool:
        """The engine's stop check: superseded, or a cancel was asked for."""
        self._heartbeat()
        return self.superseded or self.cancel_requested

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every spooled report is delivered (or the attempt is superseded)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._idle:
            while not self.superseded and self.spool.delivered < len(self.spool):
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._wake.set()
                self._idle.wait(timeout=remaining if remaining is not None else 1.0)
        return True

    def close(self, timeout: float | None = None) -> bool:
        """Flush, then stop the delivery thread; False if reports are still pending."""
        delivered = self.flush(timeout)
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout=5)
        self.client.close()
        return delivered

    # --- delivery ---------------------------------------------------------------

    def _add(self, kind: str, body: dict[str, Any]) -> None:
        if self.superseded:
            return  # a newer attempt owns the job; nothing of ours may land
        self.spool.append(kind, body)
        self._wake.set()

    def _deliver_forever(self) -> None:
        backoff = self.first_backoff
        while not self._stopping and not self.superseded:
            self._wake.clear()
            try:
                progressed = self._deliver_pending()
                backoff = self.first_backoff
            except _RetryLaterError as exc:
                delay = exc.retry_after or backoff * random.uniform(0.8, 1.2)
                log.warning(
                    "API unavailable (%s); retrying in %.1f s%s",
                    exc,
                    delay,
                    ", or as soon as it is ready" if exc.away else "",
                )
                self._back_off(delay, probe=exc.away)
                backoff = min(self.max_backoff, backoff * 2)
                continue
            except Exception:  # a bug here must not end delivery for the attempt's life
                log.exception("delivering reports failed; retrying in %.1f s", backoff)
                self._back_off(backoff, probe=False)
                backoff = min(self.max_backoff, backoff * 2)
                continue
            with self._idle:
                self._idle.notify_all()
            self._heartbeat()
            if not progressed:
                self._wake.wait(timeout=self.heartbeat_seconds)
        with self._idle:
            self._idle.notify_all()

    def _back_off(self, delay: float, *, probe: bool) -> None:
        """Wait ``delay`` seconds, less if woken (a new report, close) or, with
        ``probe``, once the API's readiness check answers 200."""
        deadline = time.monotonic() + delay
        while not self._stopping:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            if self._wake.wait(timeout=min(remaining, self.probe_seconds) if probe else remaining):
                return
            if probe and self.client.ready(timeout=min(2.0, self.probe_seconds * 2)):
                log.info("the API is ready again; delivering now")
                return

    def _heartbeat(self) -> None:
        # Called from the engine's thread and the delivery thread; httpx's
        # Client may be shared between threads.
        if self.spool.finished:
            return  # the final status ends the attempt: nothing is running any more
        if time.monotonic() - self._last_heartbeat < self.heartbeat_seconds:
            return
        self._last_heartbeat = time.monotonic()
        try:
            response = self.client.post("status", {"status": "running", "note": self._note})
        except httpx.TransportError:
            return  # the spooled reports' retries say when the API is back
        if response.is_success:
            if response.json().get("status") == "cancelling":
                self.cancel_requested = True
        elif response.status_code == 401 or _error_code(response) == "attempt_superseded":
            if self.spool.finished:
                # The heartbeat raced our own final status, which ended the
                # attempt. Whether a newer attempt owns the job, the final
                # status's own delivery says.
                return
            self.superseded = True

    def _deliver_pending(self) -> bool:
        """Deliver the spool's pending reports in order; True if any went out."""
        pending = self.spool.pending()
        position = 0
        while position < len(pending) and not self.superseded:
            group = [pending[position]]
            if group[0].kind == "events":
                while (
                    position + len(group) < len(pending)
                    and pending[position + len(group)].kind == "events"
                    and len(group) < MAX_EVENTS_PER_POST
                ):
                    group.append(pending[position + len(group)])
                body = {"events": [report.body for report in group]}
            else:
                body = group[0].body
            self._post(group, body)
            position += len(group)
            self.spool.mark_delivered(group[-1].index + 1)
        return bool(pending)

    def _post(self, group: list[Report], body: dict[str, Any]) -> None:
        try:
            response = self.client.post(group[0].kind, body)
        except httpx.TransportError as exc:
            raise _RetryLaterError(f"{type(exc).__name__}: {exc}", away=True) from exc
        except (TypeError, ValueError) as exc:  # not JSON (a NaN loss): never sendable
            self._refused(group, f"cannot be sent: {exc}")
            return
        if response.is_success:
            return
        code = _error_code(response)
        if response.status_code == 401 or code == "attempt_superseded":
            self.superseded = True
            log.warning("attempt superseded; reports stop here: %s", response.text[:300])
            return
        if response.status_code in RETRY_STATUSES or code == "conflict":
            raise _RetryLaterError(
                f"HTTP {response.status_code}",
                _retry_after(response),
                away=response.status_code in AWAY_STATUSES,
            )
        # Any other 4xx will not change on a retry: keep it in the log and go on,
        # rather than let one bad report block every later one.
        self._refused(group, f"refused ({response.status_code}): {response.text[:500]}")

    def _refused(self, group: list[Report], reason: str) -> None:
        """Drop a report that will never be taken; a batch is first sent again
        one event at a time, so that only its bad events are dropped."""
        if len(group) > 1:
            for report in group:
                if self.superseded:
                    return
                self._post([report], {"events": [report.body]})
            return
        log.error("report %d (%s) dropped, %s", group[0].index, group[0].kind, reason)
        self.dropped.append((group[0], reason))


class _RetryLaterError(Exception):
    def __init__(
        self, reason: str, retry_after: float | None = None, *, away: bool = False
    ) -> None:
        super().__init__(reason)
        self.retry_after = retry_after
        self.away = away  # the API (or its database) is away, not busy


def _is_final(entry: dict[str, Any]) -> bool:
    return entry["kind"] == "status" and entry["body"].get("status") in FINAL_STATUSES


def _error_code(response: httpx.Response) -> str | None:
    try:
        return response.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return max(0.0, float(response.headers["retry-after"]))
    except (KeyError, ValueError):
        return None
