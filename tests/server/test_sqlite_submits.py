"""SQLite's group commit: the submits waiting for the writer go in one transaction.

Each test holds the writer's lock while its submits queue up behind it, so
that they are written as one batch, as a burst of submits is.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from api_jobs import SPEC
from sqlalchemy import event, select
from sqlalchemy.exc import IntegrityError, OperationalError

from server.db.models import Job, JobTag, User
from server.db.session import make_engine, make_session_factory
from server.jobs import repository as repo
from server.jobs.sqlite_submits import GroupCommit, Written
from silo_core.spec import parse_spec


@pytest.fixture
def engine(sqlite_at_head, tmp_path):
    import shutil

    path = tmp_path / "silo.db"
    shutil.copy(sqlite_at_head, path)
    engine = make_engine(f"sqlite:///{path}")
    with make_session_factory(engine).begin() as session:
        session.add_all([User(name="alice"), User(name="bob")])
    yield engine
    engine.dispose()


def _owner(engine, name: str) -> int:
    with make_session_factory(engine)() as session:
        return session.scalar(select(User.id).where(User.name == name))


def _values(owner_id: int, *, priority: int = 0, key: str | None = None) -> dict[str, Any]:
    return {
        **repo.queued_columns(
            owner_id=owner_id,
            spec=parse_spec(SPEC),
            name=None,
            priority=priority,
            resources={"cpus": 1.0, "gpus": 0.0, "memory_gb": None},
        ),
        "created_at": repo.utcnow(),
        "attempt": 0,
        "idempotency_key": key,
        "request_hash": "h",
    }


class Batches:
    """The writer's transactions, by the number of submits each wrote."""

    def __init__(self, writer: GroupCommit, monkeypatch) -> None:
        self.sizes: list[int] = []
        original = writer._transaction

        def recorded(batch):
            self.sizes.append(len(batch))
            return original(batch)

        monkeypatch.setattr(writer, "_transaction", recorded)


@contextmanager
def queued_behind_the_writer(
    writer: GroupCommit, calls: list[Callable[[], Written | None]]
) -> Iterator[list[Any]]:
    """Run ``calls`` in threads while the writer's lock is held, until all have
    queued; release it as the block ends and wait for them. Yields each call's
    outcome (its result or the exception it raised), filled in at the end."""
    outcomes: list[Any] = [None] * len(calls)

    def run(n: int) -> None:
        try:
            outcomes[n] = calls[n]()
        except Exception as error:
            outcomes[n] = error

    threads = [threading.Thread(target=run, args=(n,)) for n in range(len(calls))]
    with writer._writer:
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 10
        while len(writer._queue) < len(calls):
            assert time.monotonic() < deadline, "the submits did not queue"
            time.sleep(0.005)
        yield outcomes
    for thread in threads:
        thread.join(timeout=30)


def _writer(engine) -> GroupCommit:
    return GroupCommit(engine, repo._SUBMIT_SQLITE)


def test_submits_waiting_for_the_writer_commit_together_each_with_its_place(engine, monkeypatch):
    writer = _writer(engine)
    batches = Batches(writer, monkeypatch)
    alice = _owner(engine, "alice")
    first = writer.submit(_values(alice), ["solo"], keyed=False)
    assert first is not None and first.ahead == 0 and first.owner == "alice"

    calls = [
        (lambda n=n: writer.submit(_values(alice), [f"t{n}", "burst"], keyed=False))
        for n in range(8)
    ]
    with queued_behind_the_writer(writer, calls) as outcomes:
        pass
    assert batches.sizes == [1, 8]
    assert all(isinstance(outcome, Written) for outcome in outcomes)
    # Each place counts the queued jobs ahead when it was written: the first
    # job and the batch's jobs before it (same priority, older).
    by_id = sorted(outcomes)
    assert [written.ahead for written in by_id] == list(range(1, 9))
    with make_session_factory(engine)() as session:
        tags = session.execute(select(JobTag.job_id, JobTag.tag)).all()
        assert session.scalar(select(Job.id).where(Job.id == by_id[-1].id)) is not None
    assert {(written.id, "burst") for written in outcomes} <= set(tags)
    assert len(tags) == 1 + 2 * 8


def test_a_job_that_cannot_be_written_fails_alone(engine, monkeypatch):
    """A foreign-key failure (an owner deleted since its token was cached) fails
    that submit with the IntegrityError a session raises; the rest of its batch
    is written."""
    writer = _writer(engine)
    batches = Batches(writer, monkeypatch)
    alice = _owner(engine, "alice")
    calls = [
        lambda: writer.submit(_values(alice), ["a"], keyed=False),
        lambda: writer.submit(_values(10_000), ["ghost"], keyed=False),
        lambda: writer.submit(_values(alice), ["b"], keyed=False),
    ]
    with queued_behind_the_writer(writer, calls) as outcomes:
        pass
    assert batches.sizes == [3, 1, 1, 1]  # the batch, then each alone
    assert isinstance(outcomes[0], Written) and isinstance(outcomes[2], Written)
    assert isinstance(outcomes[1], IntegrityError)
    with make_session_factory(engine)() as session:
        assert session.scalar(select(Job.id).where(Job.owner_id == 10_000)) is None
        stored = set(session.scalars(select(JobTag.tag)))
    assert stored == {"a", "b"}


def test_one_idempotency_key_twice_in_a_batch_writes_one_job(engine):
    writer = _writer(engine)
    alice, bob = _owner(engine, "alice"), _owner(engine, "bob")
    calls = [
        lambda: writer.submit(_values(alice, key="k"), [], keyed=True),
        lambda: writer.submit(_values(alice, key="k"), [], keyed=True),
        lambda: writer.submit(_values(bob, key="k"), [], keyed=True),
    ]
    with queued_behind_the_writer(writer, calls) as outcomes:
        pass
    alices = outcomes[:2]
    assert sorted(outcome is None for outcome in alices) == [False, True]
    assert isinstance(outcomes[2], Written) and outcomes[2].owner == "bob"


def test_a_locked_database_fails_every_submit_of_the_batch(engine):
    """Another process holding SQLite's write lock past the busy timeout: each
    submit of the batch raises the OperationalError a session would (503), and
    the writer takes the next batch afterwards."""

    @event.listens_for(engine, "connect")
    def short_busy_timeout(connection, _record) -> None:
        connection.execute("PRAGMA busy_timeout=200")

    engine.dispose()  # connections made from now on wait 0.2 s
    writer = _writer(engine)
    alice = _owner(engine, "alice")
    blocker = engine.raw_connection()
    blocker.driver_connection.execute("BEGIN IMMEDIATE")
    try:
        calls = [lambda: writer.submit(_values(alice), [], keyed=False) for _ in range(3)]
        with queued_behind_the_writer(writer, calls) as outcomes:
            pass
    finally:
        blocker.driver_connection.rollback()
        blocker.close()
    assert all(isinstance(outcome, OperationalError) for outcome in outcomes), outcomes
    assert "locked" in str(outcomes[0])
    assert writer.submit(_values(alice), [], keyed=False) is not None
