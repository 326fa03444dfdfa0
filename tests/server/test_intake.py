"""Worker progress intake through real HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import sessionmaker

from server.db.models import Artifact, CycleResultRow, Job, JobAttempt, JobEvent, User
from server.db.session import make_engine, make_session_factory
from server.jobs.attempts import settle_lost_attempt, start_attempt
from server.jobs.states import transition
from silo_contract.layout import output_folder
from silo_contract.reports import CycleResult, EpochEvent

CHECKSUM = "ab" * 32


def in_output(live_server, job_id: int, name: str) -> str:
    """An artifact location an attempt of ``job_id`` may register."""
    root = live_server.app.state.settings.resolved_artifact_root()
    return str(output_folder(root, job_id) / name)


@pytest.fixture
def db(live_server) -> Iterator[sessionmaker]:
    engine = make_engine(live_server.database_url)
    yield make_session_factory(engine)
    engine.dispose()


def make_job(db: sessionmaker) -> int:
    with db.begin() as session:
        alice = session.scalar(select(User).where(User.name == "alice"))
        job = Job(owner_id=alice.id, spec={"preset": "tiny"}, spec_hash="x", status="queued")
        session.add(job)
        session.flush()
        return job.id


def start(db: sessionmaker, job_id: int) -> tuple[int, str]:
    with db.begin() as session:
        return start_attempt(session, job_id)


def set_status(db: sessionmaker, job_id: int, status: str) -> None:
    with db.begin() as session:
        job = session.get(Job, job_id)
        job.status = transition(job.status, status)


def load_job(db: sessionmaker, job_id: int) -> Job:
    with db() as session:
        return session.get(Job, job_id)


def events(db: sessionmaker, job_id: int) -> list[tuple[int, int, int, int, bool]]:
    """(seq, attempt, cycle, epoch, superseded) of the job's events, by seq."""
    with db() as session:
        rows = session.execute(
            select(
                JobEvent.seq, JobEvent.attempt, JobEvent.cycle, JobEvent.epoch, JobEvent.superseded
            )
            .where(JobEvent.job_id == job_id)
            .order_by(JobEvent.seq)
        )
        return [tuple(row) for row in rows]


def count(db: sessionmaker, model: type, job_id: int) -> int:
    with db() as session:
        return session.scalar(select(func.count()).select_from(model).where(model.job_id == job_id))


def event(cycle: int, epoch: int, val_accuracy: float = 0.5) -> dict:
    return EpochEvent(
        cycle=cycle,
        epoch=epoch,
        epochs=4,
        cycles=3,
        lr=0.01,
        max_lr=0.1,
        train_loss=1.0,
        train_accuracy=0.6,
        val_loss=1.1,
        val_accuracy=val_accuracy,
        sparsity=0.2 * cycle,
        seconds=1.5,
    ).to_dict()


def cycle_result(cycle: int, best: float = 0.7) -> dict:
    return CycleResult(
        cycle=cycle,
        sparsity=0.2 * cycle,
        alive_weights=1000 - 100 * cycle,
        max_lr=0.1,
        best_epoch=3,
        best_val_accuracy=best,
        test_accuracy_at_best_val=best - 0.01,
        final_val_accuracy=best - 0.02,
        final_test_accuracy=best - 0.03,
        seconds=12.0,
    ).to_dict()


def worker(live_server, token: str) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"}
    return httpx.Client(base_url=live_server.base_url, headers=headers, timeout=30)


def url(job_id: int, number: int, what: str) -> str:
    return f"/v1/jobs/{job_id}/attempts/{number}/{what}"


def test_events_get_sequence_numbers_and_replays_change_nothing(live_server, db):
    job_id = make_job(db)
    number, token = start(db, job_id)
    assert number == 1
    with worker(live_server, token) as client:
        batch = {"events": [event(0, 1, 0.4), event(0, 2, 0.6), event(0, 3, 0.5)]}
        first = client.post(url(job_id, 1, "events"), json=batch)
        assert first.status_code == 200, first.text
        assert first.json() == {"accepted": 3, "duplicates": 0, "last_seq": 3}
        before = events(db, job_id)
        assert before == [(1, 1, 0, 1, False), (2, 1, 0, 2, False), (3, 1, 0, 3, False)]

        replay = client.post(url(job_id, 1, "events"), json=batch)
        assert replay.status_code == 200
        assert replay.json() == {"accepted": 0, "duplicates": 3, "last_seq": 3}
        assert events(db, job_id) == before

        # Out of order within a batch, and overlapping what is stored.
        mixed = {"events": [event(1, 3), event(0, 3), event(1, 2), event(1, 2)]}
        response = client.post(url(job_id, 1, "events"), json=mixed)
        assert response.json() == {"accepted": 2, "duplicates": 2, "last_seq": 5}
    rows = events(db, job_id)
    assert [row[0] for row in rows] == [1, 2, 3, 4, 5]
    assert rows[3:] == [(4, 1, 1, 2, False), (5, 1, 1, 3, False)]
    job = load_job(db, job_id)
    assert (job.event_seq, job.progress_cycle, job.progress_epoch) == (5, 1, 3)
    assert job.progress_sparsity == pytest.approx(0.2)
    assert job.best_accuracy == pytest.approx(0.6)
    with db() as session:
        stored = session.scalar(select(JobEvent).where(JobEvent.seq == 1))
        assert stored.extras == {"cycles": 3}


def test_a_new_attempt_supersedes_the_old_one_and_rolls_back_its_events(live_server, db):
    job_id = make_job(db)
    _, old_token = start(db, job_id)
    old = worker(live_server, old_token)
    reported = [event(0, 1, 0.3), event(0, 2, 0.4), event(1, 1, 0.5), event(1, 2, 0.9)]
    response = old.post(url(job_id, 1, "events"), json={"events": reported})
    assert response.json()["accepted"] == 4
    assert load_job(db, job_id).best_accuracy == pytest.approx(0.9)

    set_status(db, job_id, "queued")  # the dispatcher gave up on the worker
    number, new_token = start(db, job_id)
    assert number == 2
    with db() as session:
        first = session.scalar(select(JobAttempt).where(JobAttempt.number == 1))
        assert first.status == "superseded" and first.ended_at is not None

    for what, body in (
        ("events", {"events": [event(1, 3)]}),
        ("cycles", cycle_result(1)),
        (
            "artifacts",
            {
                "name": "m.pt",
                "size": 1,
                "checksum": CHECKSUM,
                "location": in_output(live_server, job_id, "m.pt"),
            },
        ),
        ("status", {"status": "succeeded"}),
    ):
        refused = old.post(url(job_id, 1, what), json=body)
        assert refused.status_code == 409, what
        assert refused.json()["error"]["code"] == "attempt_superseded"
    old.close()

    with worker(live_server, new_token) as new:
        assert new.post(url(job_id, 1, "events"), json={"events": [event(1, 1)]}).status_code == 403
        resumed = new.post(url(job_id, 2, "events"), json={"events": [event(1, 1, 0.55)]})
        assert resumed.json() == {"accepted": 1, "duplicates": 0, "last_seq": 5}
    assert events(db, job_id) == [
        (1, 1, 0, 1, False),
        (2, 1, 0, 2, False),
        (3, 1, 1, 1, True),
        (4, 1, 1, 2, True),
        (5, 2, 1, 1, False),
    ]
    job = load_job(db, job_id)
    assert (job.progress_cycle, job.progress_epoch) == (1, 1)
    assert job.best_accuracy == pytest.approx(0.55)


def test_cycles_and_artifacts_are_upserts(live_server, db):
    job_id = make_job(db)
    _, token = start(db, job_id)
    with worker(live_server, token) as client:
        created = client.post(url(job_id, 1, "cycles"), json=cycle_result(0))
        assert created.json() == {"cycle": 0, "created": True, "changed": True}
        replay = client.post(url(job_id, 1, "cycles"), json=cycle_result(0))
        assert replay.json() == {"cycle": 0, "created": False, "changed": False}
        changed = client.post(url(job_id, 1, "cycles"), json=cycle_result(0, best=0.8))
        assert changed.json() == {"cycle": 0, "created": False, "changed": True}
        client.post(url(job_id, 1, "cycles"), json=cycle_result(1))

        artifact = {
            "name": "model-final.pt",
            "size": 10,
            "checksum": CHECKSUM,
            "location": in_output(live_server, job_id, "model-final.pt"),
        }
        first = client.post(url(job_id, 1, "artifacts"), json=artifact)
        assert first.json() == {"name": "model-final.pt", "created": True, "changed": True}
        again = client.post(url(job_id, 1, "artifacts"), json=artifact)
        assert again.json()["changed"] is False
        replaced = client.post(
            url(job_id, 1, "artifacts"), json={**artifact, "size": 11, "checksum": "CD" * 32}
        )
        assert replaced.json() == {"name": "model-final.pt", "created": False, "changed": True}
    assert count(db, CycleResultRow, job_id) == 2
    assert count(db, Artifact, job_id) == 1
    with db() as session:
        row = session.scalar(select(CycleResultRow).where(CycleResultRow.cycle == 0))
        assert row.best_val_accuracy == pytest.approx(0.8)
        stored = session.scalar(select(Artifact).where(Artifact.job_id == job_id))
        assert (stored.size, stored.checksum) == (11, "cd" * 32)


def test_a_final_status_ends_the_attempt(live_server, db):
    job_id = make_job(db)
    _, token = start(db, job_id)
    with worker(live_server, token) as client:
        heartbeat = client.post(url(job_id, 1, "status"), json={"status": "running"})
        assert heartbeat.json() == {"status": "running", "changed": False}
        done = client.post(url(job_id, 1, "status"), json={"status": "succeeded"})
        assert done.json() == {"status": "succeeded", "changed": True}
        replay = client.post(url(job_id, 1, "status"), json={"status": "succeeded"})
        assert replay.status_code == 200
        assert replay.json() == {"status": "succeeded", "changed": False}
        for what, body in (
            ("events", {"events": [event(0, 1)]}),
            ("status", {"status": "failed", "message": "late"}),
            ("status", {"status": "running"}),
        ):
            late = client.post(url(job_id, 1, what), json=body)
            assert late.status_code == 409
            assert late.json()["error"]["code"] == "attempt_superseded"
    job = load_job(db, job_id)
    assert job.status == "succeeded" and job.finished_at is not None
    assert job.error_message is None and job.event_seq == 0

    failing = make_job(db)
    _, token = start(db, failing)
    set_status(db, failing, "cancelling")
    with worker(live_server, token) as client:
        beat = client.post(url(failing, 1, "status"), json={"status": "running"})
        assert beat.json() == {"status": "cancelling", "changed": False}
        failed = client.post(url(failing, 1, "status"), json={"status": "failed", "message": "OOM"})
        assert failed.json() == {"status": "failed", "changed": True}
    job = load_job(db, failing)
    assert (job.status, job.error_message) == ("failed", "OOM")
    with db() as session:
        attempt = session.scalar(select(JobAttempt).where(JobAttempt.job_id == failing))
        assert attempt.status == "failed" and attempt.ended_at is not None


def test_a_heartbeat_carries_the_progress_note_until_the_job_ends(live_server, db):
    job_id = make_job(db)
    _, token = start(db, job_id)
    note = "Oracle search: 12/40 trial epochs, best so far max_lr 0.1 (93.0% val)"
    with (
        worker(live_server, token) as client,
        live_server.client("alice") as alice,
    ):

        def shown() -> str | None:
            return alice.get(f"/v1/jobs/{job_id}").json()["progress"]["note"]

        beat = client.post(url(job_id, 1, "status"), json={"status": "running", "note": note})
        assert beat.json() == {"status": "running", "changed": False}
        assert load_job(db, job_id).progress_note == note
        assert shown() == note
        listed = alice.get("/v1/jobs").json()["items"]
        assert [item["progress"]["note"] for item in listed if item["id"] == job_id] == [note]

        long_note = {"status": "running", "note": "x" * 201}
        too_long = client.post(url(job_id, 1, "status"), json=long_note)
        assert too_long.status_code == 422
        assert too_long.json()["error"]["details"][0]["field"] == "note"
        assert shown() == note  # the refused heartbeat wrote nothing

        client.post(url(job_id, 1, "status"), json={"status": "running"})
        assert shown() is None  # a heartbeat without a note clears it
        client.post(url(job_id, 1, "status"), json={"status": "running", "note": note})
        done = client.post(url(job_id, 1, "status"), json={"status": "succeeded"})
        assert done.json()["status"] == "succeeded"
    assert load_job(db, job_id).progress_note is None  # the end clears it too

    lost = make_job(db)
    _, token = start(db, lost)
    with worker(live_server, token) as client:
        client.post(url(lost, 1, "status"), json={"status": "running", "note": note})
    with db.begin() as session:
        settle_lost_attempt(session, lost, 1, max_attempts=3, reason="killed")
    job = load_job(db, lost)
    assert (job.status, job.progress_note) == ("queued", None)  # not shown by its next attempt


def test_illegal_status_reports_get_409(live_server, db):
    job_id = make_job(db)
    _, token = start(db, job_id)
    with worker(live_server, token) as client:
        cancelled = client.post(url(job_id, 1, "status"), json={"status": "cancelled"})
        assert cancelled.status_code == 409
        error = cancelled.json()["error"]
        assert error["code"] == "illegal_transition"
        assert "a running job cannot become cancelled" in error["message"]
        assert load_job(db, job_id).status == "running"

        set_status(db, job_id, "queued")  # requeued; this attempt is stale but not replaced
        stale = client.post(url(job_id, 1, "status"), json={"status": "succeeded"})
        assert stale.status_code == 409
        assert stale.json()["error"]["code"] == "illegal_transition"
        revive = client.post(url(job_id, 1, "status"), json={"status": "running"})
        assert revive.json()["error"]["code"] == "illegal_transition"
    job = load_job(db, job_id)
    assert job.status == "queued" and job.finished_at is None


def test_tokens_are_checked(live_server, db):
    job_id, other_id = make_job(db), make_job(db)
    _, token = start(db, job_id)
    start(db, other_id)
    body = {"events": [event(0, 1)]}
    with live_server.client(None) as anonymous:
        missing = anonymous.post(url(job_id, 1, "events"), json=body)
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"] == "Bearer"
    with live_server.client("alice") as user:
        assert user.post(url(job_id, 1, "events"), json=body).status_code == 401
    with worker(live_server, "silo_attempt_not-a-real-token") as forged:
        unknown = forged.post(url(job_id, 1, "events"), json=body)
        assert unknown.status_code == 401
        assert unknown.json()["error"]["code"] == "unauthenticated"
    with worker(live_server, token) as client:
        for path in (url(other_id, 1, "events"), url(job_id, 2, "events")):
            forbidden = client.post(path, json=body)
            assert forbidden.status_code == 403
            assert forbidden.json()["error"]["code"] == "forbidden"
        assert client.post(url(other_id, 1, "status"), json={"status": "failed"}).status_code == 403
        # An attempt token is no user token: the jobs API refuses it.
        assert client.get(f"/v1/jobs/{job_id}").status_code == 401
    assert count(db, JobEvent, job_id) == count(db, JobEvent, other_id) == 0
    assert load_job(db, other_id).status == "running"


def test_bad_bodies_are_422_and_write_nothing(live_server, db):
    job_id = make_job(db)
    _, token = start(db, job_id)
    no_val_loss = event(0, 1)
    del no_val_loss["val_loss"]
    artifact = {"name": "m.pt", "size": 1, "checksum": CHECKSUM, "location": "x"}
    bad = [
        ("events", {"events": [event(0, 2), no_val_loss]}),
        ("events", {"events": []}),
        ("events", {"events": [{"cycle": i} for i in range(501)]}),
        ("events", {"events": [{**event(0, 1), "epoch": 0}]}),
        ("cycles", {k: v for k, v in cycle_result(0).items() if k != "seconds"}),
        ("artifacts", {**artifact, "checksum": "z" * 64}),
        ("artifacts", {**artifact, "name": "../escape"}),
        ("artifacts", {**artifact, "size": -1}),
        ("status", {"status": "exploded"}),
        ("status", {"status": "failed", "message": "x" * 10_001}),
    ]
    with worker(live_server, token) as client:
        for what, body in bad:
            response = client.post(url(job_id, 1, what), json=body)
            assert response.status_code == 422, (what, response.text)
            error = response.json()["error"]
            assert error["code"] == "invalid_request"
            assert error["details"], error
        too_many = client.post(
            url(job_id, 1, "events"), json={"events": [{"cycle": i} for i in range(501)]}
        )
        assert "at most 500 events" in too_many.json()["error"]["message"]
        # NaN, Infinity and numbers past a double are no JSON: refused as such,
        # in a metric as in the free-form extras.
        for value in (float("nan"), float("inf"), "1e999"):
            body = {"events": [{**event(0, 1), "extras": {"x": 0.5}, "val_loss": 0.25}]}
            text = json.dumps(body).replace("0.5", str(value)).replace("0.25", str(value))
            refused = client.post(
                url(job_id, 1, "events"),
                content=text,
                headers={"content-type": "application/json"},
            )
            assert refused.status_code == 400, (value, refused.text)
            assert refused.json()["error"]["code"] == "invalid_json"
            assert refused.json()["error"]["details"][0]["field"] == "body"
    assert count(db, JobEvent, job_id) == 0
    assert count(db, CycleResultRow, job_id) == count(db, Artifact, job_id) == 0
    job = load_job(db, job_id)
    assert (job.status, job.event_seq, job.progress_cycle) == ("running", 0, None)


def test_concurrent_batches_get_gapless_unique_sequence_numbers(live_server, db):
    job_id = make_job(db)
    _, token = start(db, job_id)
    threads_n, batches_each, per_batch = 6, 4, 10
    failures: list[str] = []
    barrier = threading.Barrier(threads_n)

    def post_batches(index: int) -> None:
        with worker(live_server, token) as client:
            barrier.wait()
            for b in range(batches_each):
                cycle = index * batches_each + b
                batch = {"events": [event(cycle, e) for e in range(per_batch, 0, -1)]}
                response = client.post(url(job_id, 1, "events"), json=batch)
                if response.status_code != 200 or response.json()["accepted"] != per_batch:
                    failures.append(response.text)

    threads = [threading.Thread(target=post_batches, args=(i,)) for i in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    total = threads_n * batches_each * per_batch
    rows = events(db, job_id)
    assert [row[0] for row in rows] == list(range(1, total + 1))
    assert len({(row[2], row[3]) for row in rows}) == total
    # Within each batch, seqs follow (cycle, epoch) and a batch's seqs are contiguous.
    by_cycle: dict[int, list[int]] = {}
    for seq, _, cycle, _, _ in rows:
        by_cycle.setdefault(cycle, []).append(seq)
    for seqs in by_cycle.values():
        assert seqs == list(range(seqs[0], seqs[0] + per_batch))
    assert load_job(db, job_id).event_seq == total


def test_an_attempt_registers_only_files_of_its_own_output_folder(live_server, db, tmp_path):
    """Another job's weights, a file elsewhere, a path out through '..' or a link
    pointing out are refused (422, naming location), and nothing is stored."""
    job_id, other_id = make_job(db), make_job(db)
    _, token = start(db, job_id)
    root = live_server.app.state.settings.resolved_artifact_root()
    others = output_folder(root, other_id) / "model.pt"
    others.parent.mkdir(parents=True)
    others.write_bytes(b"their weights")
    own = output_folder(root, job_id)
    own.mkdir(parents=True)
    (own / "linked.pt").symlink_to(others)
    refused = [
        str(others),
        others.as_uri(),
        str(tmp_path / "elsewhere.pt"),
        str(own / ".." / ".." / str(other_id) / "output" / "model.pt"),
        str(own / "linked.pt"),
        "model.pt",  # relative: to what?
        "s3://bucket/model.pt",
    ]
    with worker(live_server, token) as client:
        for location in refused:
            body = {"name": "model.pt", "size": 13, "checksum": CHECKSUM, "location": location}
            response = client.post(url(job_id, 1, "artifacts"), json=body)
            assert response.status_code == 422, location
            assert response.json()["error"]["details"][0]["field"] == "location"
        assert count(db, Artifact, job_id) == 0
        body = {"name": "model.pt", "size": 1, "checksum": CHECKSUM, "location": str(own / "m.pt")}
        assert client.post(url(job_id, 1, "artifacts"), json=body).status_code == 200
    assert count(db, Artifact, job_id) == 1
