"""The worker's reporter against the real API: order, the API away, replays, supersession."""

from __future__ import annotations

import json
import logging
import threading
import time

import httpx
import pytest
from sqlalchemy import select

from server.db.models import Artifact, CycleResultRow, Job, JobEvent, User
from server.db.session import make_engine, make_session_factory
from server.jobs.attempts import start_attempt
from server.jobs.states import transition
from silo_contract.layout import output_folder
from silo_contract.reports import CycleResult, EpochEvent
from workers.reporter import ApiReporter, IntakeClient, ReportSpool

CHECKSUM = "cd" * 32


@pytest.fixture
def db(live_server):
    engine = make_engine(live_server.database_url)
    yield make_session_factory(engine)
    engine.dispose()


def new_attempt(db, job_id: int | None = None) -> tuple[int, int, str]:
    """(job id, attempt number, token): a fresh queued job started, or ``job_id`` restarted."""
    with db.begin() as session:
        if job_id is None:
            alice = session.scalar(select(User).where(User.name == "alice"))
            job = Job(owner_id=alice.id, spec={}, spec_hash="h", status="queued")
            session.add(job)
            session.flush()
            job_id = job.id
        else:
            job = session.get(Job, job_id)
            job.status = transition(job.status, "queued")
        number, token = start_attempt(session, job_id)
    return job_id, number, token


def reporter_for(
    live_server,
    tmp_path,
    job_id: int,
    number: int,
    token: str,
    transport: httpx.BaseTransport | None = None,
    **options,
) -> ApiReporter:
    client = IntakeClient(
        live_server.base_url, job_id, number, token, timeout=5, transport=transport
    )
    options = {"first_backoff": 0.05, **options}
    return ApiReporter(client, ReportSpool(tmp_path / f"attempt-{number}"), **options)


class StatusLog(httpx.HTTPTransport):
    """Records every status the reporter posts (heartbeats are ``running``) and its answer.

    With ``hold_heartbeats``, a heartbeat sent from any thread but the delivery
    thread (the engine's stop check) waits until a final status has been
    answered, as a slow heartbeat would.
    """

    def __init__(self, hold_heartbeats: bool = False) -> None:
        super().__init__()
        self.posted: list[tuple[str, int]] = []
        self.hold_heartbeats = hold_heartbeats
        self.heartbeat_held = threading.Event()
        self.final_answered = threading.Event()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        status = None
        if request.url.path.endswith("/status"):
            status = json.loads(request.content)["status"]
        held = (
            status == "running"
            and self.hold_heartbeats
            and threading.current_thread().name != "silo-reporter"
        )
        if held:
            self.heartbeat_held.set()
            assert self.final_answered.wait(timeout=30)
        response = super().handle_request(request)
        if status is not None:
            self.posted.append((status, response.status_code))
        if status not in (None, "running"):
            self.final_answered.set()
        return response


def epoch(cycle: int, n: int) -> EpochEvent:
    return EpochEvent(
        cycle=cycle,
        epoch=n,
        epochs=3,
        cycles=2,
        lr=0.01 * n,
        max_lr=0.1,
        train_loss=1.0 / n,
        train_accuracy=0.5,
        val_loss=1.0,
        val_accuracy=0.4 + 0.1 * n,
        sparsity=0.2 * cycle,
        seconds=0.1,
    )


def cycle_result(cycle: int) -> CycleResult:
    return CycleResult(
        cycle=cycle,
        sparsity=0.2 * cycle,
        alive_weights=1000 - 200 * cycle,
        max_lr=0.1,
        best_epoch=3,
        best_val_accuracy=0.7,
        test_accuracy_at_best_val=0.69,
        final_val_accuracy=0.7,
        final_test_accuracy=0.68,
        seconds=0.3,
    )


def stored(db, job_id: int) -> dict:
    with db() as session:
        job = session.get(Job, job_id)
        events = session.execute(
            select(JobEvent.seq, JobEvent.attempt, JobEvent.cycle, JobEvent.epoch)
            .where(JobEvent.job_id == job_id)
            .order_by(JobEvent.seq)
        ).all()
        cycles = session.scalars(
            select(CycleResultRow.cycle).where(CycleResultRow.job_id == job_id)
        ).all()
        artifacts = session.scalars(select(Artifact.name).where(Artifact.job_id == job_id)).all()
        return {
            "status": job.status,
            "events": [tuple(row) for row in events],
            "cycles": sorted(cycles),
            "artifacts": sorted(artifacts),
        }


def model_location(live_server, job_id: int) -> str:
    """Where the job keeps model.pt: the only place it may register it from."""
    root = live_server.app.state.settings.resolved_artifact_root()
    return str(output_folder(root, job_id) / "model.pt")


def report_two_cycles(reporter: ApiReporter, location: str) -> None:
    for cycle in (0, 1):
        for n in (1, 2, 3):
            reporter.on_epoch(epoch(cycle, n))
        reporter.on_cycle(cycle_result(cycle))
    reporter.artifact("model.pt", 123, CHECKSUM, location)
    reporter.status("succeeded")


def test_reports_arrive_in_order_and_finish_the_job(live_server, db, tmp_path):
    job_id, number, token = new_attempt(db)
    reporter = reporter_for(live_server, tmp_path, job_id, number, token)
    report_two_cycles(reporter, model_location(live_server, job_id))
    assert reporter.close(timeout=30)
    state = stored(db, job_id)
    expected = [(c, n) for c in (0, 1) for n in (1, 2, 3)]
    assert [(c, n) for _, _, c, n in state["events"]] == expected
    assert [seq for seq, *_ in state["events"]] == list(range(1, 7))
    assert state["cycles"] == [0, 1]
    assert state["artifacts"] == ["model.pt"]
    assert state["status"] == "succeeded"
    assert not reporter.dropped


def test_a_note_reaches_the_job_with_the_next_heartbeat_and_is_cleared_the_same_way(
    live_server, db, tmp_path
):
    job_id, number, token = new_attempt(db)
    reporter = reporter_for(live_server, tmp_path, job_id, number, token)

    def note_becomes(expected: str | None) -> bool:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with db() as session:
                if session.get(Job, job_id).progress_note == expected:
                    return True
            time.sleep(0.05)
        return False

    try:
        reporter.on_note("Oracle search: 3/40 trial epochs")
        assert note_becomes("Oracle search: 3/40 trial epochs")  # the idle thread's heartbeat
        reporter.on_note("x" * 500)  # cut to what the API takes, not refused
        assert note_becomes("x" * 200)
        reporter.on_note(None)
        assert note_becomes(None)
    finally:
        reporter.close(timeout=10)


def test_api_away_reports_wait_on_disk_and_go_out_in_order_when_it_returns(
    live_server, db, tmp_path
):
    job_id, number, token = new_attempt(db)
    live_server.stop()  # nothing listens on the API's port now
    reporter = reporter_for(live_server, tmp_path, job_id, number, token)
    report_two_cycles(reporter, model_location(live_server, job_id))
    assert not reporter.flush(timeout=0.5)  # refused connections: still pending
    assert len(reporter.spool) == 10 and reporter.spool.delivered == 0
    live_server.start()
    assert reporter.close(timeout=30)
    state = stored(db, job_id)
    assert [(c, n) for _, _, c, n in state["events"]] == [(c, n) for c in (0, 1) for n in (1, 2, 3)]
    assert (state["cycles"], state["status"]) == ([0, 1], "succeeded")


def test_a_spool_replayed_after_a_crash_changes_nothing(live_server, db, tmp_path):
    job_id, number, token = new_attempt(db)
    first = reporter_for(live_server, tmp_path, job_id, number, token)
    for n in (1, 2, 3):
        first.on_epoch(epoch(0, n))
    first.on_cycle(cycle_result(0))
    assert first.close(timeout=30)
    before = stored(db, job_id)
    # A worker that died before recording what it delivered replays its spool.
    first.spool.mark_delivered(0)
    again = reporter_for(live_server, tmp_path, job_id, number, token)
    assert again.close(timeout=30)
    assert stored(db, job_id) == before
    assert not again.dropped


def test_a_superseded_attempt_stops_reporting(live_server, db, tmp_path):
    job_id, first_number, first_token = new_attempt(db)
    old = reporter_for(live_server, tmp_path, job_id, first_number, first_token)
    old.on_epoch(epoch(0, 1))
    assert old.flush(timeout=30)
    _, second_number, second_token = new_attempt(db, job_id)  # the dispatcher restarted it
    new = reporter_for(live_server, tmp_path, job_id, second_number, second_token)
    # Refused by the API (409), or not even spooled when a heartbeat found out first.
    old.on_epoch(epoch(0, 2))
    assert old.flush(timeout=30)
    assert old.superseded and old.should_stop()
    spooled = len(old.spool)
    old.on_epoch(epoch(0, 3))  # superseded: not even spooled
    assert len(old.spool) == spooled
    new.on_epoch(epoch(0, 1))
    assert new.close(timeout=30) and not new.superseded
    old.close(timeout=5)
    events = stored(db, job_id)["events"]
    assert [(a, c, n) for _, a, c, n in events] == [(1, 0, 1), (2, 0, 1)]


def test_a_finished_attempt_sends_no_heartbeat_and_is_not_superseded(live_server, db, tmp_path):
    job_id, number, token = new_attempt(db)
    statuses = StatusLog()
    reporter = reporter_for(
        live_server, tmp_path, job_id, number, token, statuses, heartbeat_seconds=0.02
    )
    report_two_cycles(reporter, model_location(live_server, job_id))
    assert reporter.flush(timeout=30)
    time.sleep(0.5)  # many heartbeat periods of the idle delivery thread
    assert not reporter.should_stop()
    assert reporter.close(timeout=10)
    assert not reporter.superseded
    final = statuses.posted.index(("succeeded", 200))
    assert statuses.posted[final + 1 :] == []  # no heartbeat after the final status
    assert stored(db, job_id)["status"] == "succeeded"


def test_a_heartbeat_that_races_the_final_status_is_not_taken_for_supersession(
    live_server, db, tmp_path
):
    job_id, number, token = new_attempt(db)
    statuses = StatusLog(hold_heartbeats=True)
    reporter = reporter_for(live_server, tmp_path, job_id, number, token, statuses)
    reporter.on_epoch(epoch(0, 1))
    assert reporter.flush(timeout=30)

    def engine_checks() -> None:  # the engine's stop checks, until one heartbeat goes out
        while not statuses.heartbeat_held.is_set():
            reporter.should_stop()
            time.sleep(0.02)

    engine = threading.Thread(target=engine_checks)
    engine.start()
    assert statuses.heartbeat_held.wait(timeout=10)
    reporter.status("succeeded")  # delivered while that heartbeat is on its way
    engine.join(timeout=30)
    assert reporter.close(timeout=10)
    assert ("running", 409) in statuses.posted  # the heartbeat arrived after the final status
    assert not reporter.superseded and not reporter.should_stop()
    assert stored(db, job_id)["status"] == "succeeded"


@pytest.mark.parametrize("empty_database_url", ["sqlite"], indirect=True)
def test_after_a_long_outage_reports_go_out_as_soon_as_the_api_is_back(
    live_server, db, tmp_path, caplog
):
    caplog.set_level(logging.INFO, logger="silo.workers.reporter")
    job_id, number, token = new_attempt(db)
    live_server.stop()
    reporter = reporter_for(
        live_server, tmp_path, job_id, number, token, first_backoff=0.5, max_backoff=20
    )
    report_two_cycles(reporter, model_location(live_server, job_id))

    def announced_wait() -> float:
        waits = [
            record.args[1]
            for record in caplog.records
            if record.msg.startswith("API unavailable") and isinstance(record.args, tuple)
        ]
        return max(waits, default=0.0)

    deadline = time.monotonic() + 60
    while announced_wait() < 8:  # the backoff has grown past 8 s
        assert time.monotonic() < deadline, "the backoff never grew past 8 s"
        time.sleep(0.05)
    time.sleep(1)  # a second into that wait
    live_server.start()
    back = time.monotonic()
    while reporter.spool.delivered < len(reporter.spool):
        assert time.monotonic() - back < 10, "the reports did not go out"
        time.sleep(0.02)
    delay = time.monotonic() - back
    print(
        f"delivered {delay:.2f} s after the API was back (the backoff was {announced_wait():.1f} s)"
    )
    assert delay < 3, delay
    assert reporter.close(timeout=10)
    assert stored(db, job_id)["status"] == "succeeded"


def test_refused_reports_are_dropped_and_the_later_ones_delivered(live_server, db, tmp_path):
    job_id, number, token = new_attempt(db)
    # Spooled before the reporter starts, so the first four events go out as one batch.
    spool = ReportSpool(tmp_path / f"attempt-{number}")
    spool.append("events", epoch(0, 1).to_dict())
    # model_copy does not validate, so these reach the API as written.
    zeroth = epoch(0, 2).model_copy(update={"epoch": 0})  # 422: epochs count from 1
    spool.append("events", zeroth.to_dict())
    not_json = epoch(0, 2).model_copy(update={"val_loss": float("nan")})
    spool.append("events", not_json.to_dict())
    spool.append("events", epoch(0, 3).to_dict())
    spool.append("cycle", cycle_result(0).to_dict())
    spool.append("artifact", {"name": "x", "size": 1, "checksum": "no", "location": "/x"})  # 422
    reporter = reporter_for(live_server, tmp_path, job_id, number, token)
    for n in (1, 2, 3):
        reporter.on_epoch(epoch(1, n))
    reporter.on_cycle(cycle_result(1))
    reporter.artifact("model.pt", 123, CHECKSUM, model_location(live_server, job_id))
    reporter.status("succeeded")
    assert reporter.close(timeout=30)
    assert [(report.index, report.kind) for report, _ in reporter.dropped] == [
        (1, "events"),
        (2, "events"),
        (5, "artifact"),
    ]
    state = stored(db, job_id)
    assert [(c, n) for _, _, c, n in state["events"]] == [(0, 1), (0, 3), (1, 1), (1, 2), (1, 3)]
    assert (state["cycles"], state["artifacts"], state["status"]) == (
        [0, 1],
        ["model.pt"],
        "succeeded",
    )
    assert not reporter.superseded
