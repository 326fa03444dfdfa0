"""Conditional reads and watches (server/api/conditional.py, server/changes/).

Jobs, job lists, cycle tables, studies and study lists carry an ETag; a
request holding the current one is answered 304, without a database read when
the process knows nothing changed; ``?wait=`` turns a poll into a watch.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
from api_jobs import SPEC, submit
from servers import database_session
from sqlalchemy import event, text

from server.db.models import Job
from server.jobs.claims import claim_next

ADDRESS = {"api_url": "http://127.0.0.1:9", "artifact_root": "/nonexistent"}


def tracking(live_server, timeout: float = 10.0) -> None:
    """Wait until the server's book hears every change (PostgreSQL: its LISTEN is up)."""
    book = live_server.app.state.changes
    deadline = time.monotonic() + timeout
    while not book.tracking:
        assert time.monotonic() < deadline, "the change listener did not start"
        time.sleep(0.02)


@contextmanager
def statements(live_server) -> Iterator[list[str]]:
    """The SQL statements the server's engine runs inside the block."""
    seen: list[str] = []

    def record(_conn, _cursor, statement, *_args) -> None:
        seen.append(statement)

    engine = live_server.app.state.engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def new_job(client) -> tuple[str, str]:
    """A new job's path and the ETag of its first answer."""
    path = f"/v1/jobs/{submit(client)['id']}"
    return path, client.get(path).headers["ETag"]


def conditional_get(client, path: str, etag: str, **params):
    return client.get(path, headers={"If-None-Match": etag}, params=params)


def eventually_modified(client, path: str, etag: str, timeout: float = 5.0):
    """Poll with ``etag`` until the answer is no longer 304 (another process's change
    reaches this one through NOTIFY)."""
    deadline = time.monotonic() + timeout
    while True:
        response = conditional_get(client, path, etag)
        if response.status_code != 304 or time.monotonic() > deadline:
            return response
        time.sleep(0.05)


def test_a_job_answers_304_while_unchanged_and_200_once_it_changes(live_server):
    with live_server.client() as alice:
        job = submit(alice)
        path = f"/v1/jobs/{job['id']}"
        first = alice.get(path)
        etag = first.headers["ETag"]
        assert etag.startswith('W/"') and first.headers["Cache-Control"] == "private, no-cache"

        again = conditional_get(alice, path, etag)
        assert again.status_code == 304 and again.content == b""
        assert again.headers["ETag"] == etag
        # Any of several held tags; the weak prefix does not matter to the comparison.
        assert conditional_get(alice, path, f'"other", {etag[2:]}').status_code == 304
        assert conditional_get(alice, path, '"other"').status_code == 200

        cancelled = alice.post(f"{path}/cancel")
        assert cancelled.status_code == 200
        changed = conditional_get(alice, path, etag)
        assert changed.status_code == 200 and changed.json()["status"] == "cancelled"
        assert changed.headers["ETag"] != etag


def test_an_unchanged_answer_reads_nothing_from_the_database(live_server):
    tracking(live_server)
    with live_server.client() as alice:
        path, etag = new_job(alice)
        assert conditional_get(alice, path, etag).status_code == 304  # the token is cached now
        with statements(live_server) as seen:
            for _ in range(20):
                assert conditional_get(alice, path, etag).status_code == 304
            # A poll without a tag is answered from memory too: the same body and tag.
            plain = alice.get(path)
        assert seen == []
        assert plain.status_code == 200 and path.endswith(f"/{plain.json()['id']}")
        assert plain.headers["ETag"] == etag
        alice.post(f"{path}/cancel")
        with statements(live_server) as seen:
            changed = alice.get(path)
        assert seen, "the answer after a change is read from the database"
        assert changed.json()["status"] == "cancelled"


def test_the_same_answer_has_the_same_tag_from_every_process(live_server, tmp_path):
    """The tag is a digest of the answer, not a counter of one process."""
    from test_tokens_api import another_process

    with live_server.client() as alice:
        path, etag = new_job(alice)
        with another_process(live_server, tmp_path) as other, other.client() as elsewhere:
            assert elsewhere.get(path).headers["ETag"] == etag
            assert conditional_get(elsewhere, path, etag).status_code == 304


def test_a_running_jobs_tag_holds_while_only_its_clock_moves(live_server):
    with live_server.client() as alice:
        job = submit(alice)
        with database_session(live_server) as session:
            claim_next(session, **ADDRESS)
        path = f"/v1/jobs/{job['id']}"
        first = alice.get(path)
        assert first.json()["status"] == "running"
        time.sleep(0.3)
        later = alice.get(path)
        assert (
            later.json()["progress"]["elapsed_seconds"]
            > first.json()["progress"]["elapsed_seconds"]
        )
        assert later.headers["ETag"] == first.headers["ETag"]

        with database_session(live_server) as session:
            session.get(Job, job["id"]).progress_epoch = 2
        progressed = conditional_get(alice, path, first.headers["ETag"])
        assert progressed.status_code == 200 and progressed.json()["progress"]["epoch"] == 2


def test_a_queued_jobs_tag_follows_its_place_in_the_queue(live_server):
    with live_server.client() as alice:
        waiting = submit(alice)
        path = f"/v1/jobs/{waiting['id']}"
        first = alice.get(path)
        assert first.json()["queue"]["position"] == 1
        submit(alice, priority=5)  # goes ahead of it
        moved = conditional_get(alice, path, first.headers["ETag"])
        assert moved.status_code == 200 and moved.json()["queue"]["position"] == 2


def test_lists_cycles_and_studies_answer_304_until_they_change(live_server):
    with live_server.client() as alice:
        job = submit(alice)
        study = alice.post(
            "/v1/studies",
            json={"spec": SPEC, "schedules": [{"name": "silo"}, {"name": "lr_rewind"}]},
        ).json()
        targets = {
            "/v1/jobs": lambda: submit(alice),
            "/v1/studies": lambda: alice.post(
                "/v1/studies", json={"spec": SPEC, "schedules": [{"name": "slr"}]}
            ),
            f"/v1/studies/{study['id']}": lambda: alice.post(
                f"/v1/jobs/{study['members'][0]['job_id']}/cancel"
            ),
            f"/v1/jobs/{job['id']}/cycles": lambda: add_cycle(live_server, job["id"]),
        }
        for path, change in targets.items():
            etag = alice.get(path).headers["ETag"]
            assert conditional_get(alice, path, etag).status_code == 304, path
            change()
            changed = conditional_get(alice, path, etag)
            assert changed.status_code == 200, path
            assert changed.headers["ETag"] != etag, path


def add_cycle(live_server, job_id: int) -> None:
    from server.db.models import CycleResultRow

    accuracy = dict.fromkeys(
        (
            "best_val_accuracy",
            "test_accuracy_at_best_val",
            "final_val_accuracy",
            "final_test_accuracy",
        ),
        0.9,
    )
    with database_session(live_server) as session:
        session.add(
            CycleResultRow(
                job_id=job_id,
                attempt=1,
                cycle=1,
                sparsity=0.2,
                alive_weights=100,
                max_lr=0.1,
                best_epoch=1,
                seconds=1.0,
                **accuracy,
            )
        )


@pytest.mark.parametrize("live_settings", [{"read_access": "owner"}])
def test_a_tag_opens_nothing_to_a_reader_who_may_not_see_the_job(live_server):
    with live_server.client() as alice, live_server.client("bob") as bob:
        path, etag = new_job(alice)
        assert conditional_get(bob, path, etag).status_code == 404
        assert conditional_get(bob, path, "*").status_code == 404
        assert conditional_get(live_server.client(None), path, etag).status_code == 401


# SQLite is served by one process: its own commits are all the news there is.
ON_POSTGRESQL = pytest.mark.parametrize("empty_database_url", ["postgresql"], indirect=True)


@ON_POSTGRESQL
def test_a_change_in_another_process_reaches_this_one(live_server):
    """The commit of a process that shares nothing with the server but the
    database reaches it through NOTIFY."""
    tracking(live_server)
    with live_server.client() as alice:
        path, etag = new_job(alice)
        cancel_elsewhere(live_server, int(path.rsplit("/", 1)[1]))
        changed = eventually_modified(alice, path, etag)
        assert changed.status_code == 200 and changed.json()["status"] == "cancelled"


def cancel_elsewhere(live_server, job_id: int) -> None:
    """Cancel the job from a separate Python process, through the tracked sessions."""
    program = (
        "import sys\n"
        "from server.db.session import make_engine, make_session_factory\n"
        "from server.jobs import repository\n"
        "engine = make_engine(sys.argv[1])\n"
        "with make_session_factory(engine).begin() as session:\n"
        "    repository.cancel_job(repository.get_job(session, int(sys.argv[2])))\n"
    )
    subprocess.run(
        [sys.executable, "-c", program, live_server.database_url, str(job_id)],
        check=True,
        timeout=120,
    )


@ON_POSTGRESQL
def test_news_lost_while_the_listener_is_down_never_leave_a_stale_304(live_server):
    tracking(live_server)
    book = live_server.app.state.changes
    with live_server.client() as alice:
        path, etag = new_job(alice)
        with database_session(live_server) as session:
            ended = session.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND query LIKE 'LISTEN%'"
                )
            ).all()
        assert ended == [(True,)]
        cancel_elsewhere(live_server, int(path.rsplit("/", 1)[1]))
        # Whether the change lands while the listener is away or after it is back,
        # the old tag is not current any more.
        changed = eventually_modified(alice, path, etag)
        assert changed.status_code == 200 and changed.json()["status"] == "cancelled"
        tracking(live_server)
        assert book.tracking


# --- watches ---------------------------------------------------------------------------


def test_a_watch_answers_as_soon_as_the_job_changes(live_server):
    tracking(live_server)
    with live_server.client() as alice:
        path, etag = new_job(alice)

        def cancel_soon() -> None:
            time.sleep(0.5)
            with live_server.client("root") as root:
                root.post(f"{path}/cancel")

        changer = threading.Thread(target=cancel_soon)
        started = time.monotonic()
        changer.start()
        watched = conditional_get(alice, path, etag, wait="20s")
        took = time.monotonic() - started
        changer.join()
        assert watched.status_code == 200 and watched.json()["status"] == "cancelled"
        assert 0.4 < took < 10, took


def test_a_watch_of_an_unchanged_job_answers_304_after_the_wait(live_server):
    tracking(live_server)
    with live_server.client() as alice:
        path, etag = new_job(alice)
        started = time.monotonic()
        watched = conditional_get(alice, path, etag, wait="700ms")
        took = time.monotonic() - started
        assert watched.status_code == 304 and watched.headers["ETag"] == etag
        assert 0.6 < took < 5, took
        # Without If-None-Match (or with an old tag) a watch answers at once.
        assert alice.get(path, params={"wait": "30s"}).status_code == 200
        study = alice.post("/v1/studies", json={"spec": SPEC, "schedules": [{"name": "silo"}]})
        study_path = f"/v1/studies/{study.json()['id']}"
        study_tag = alice.get(study_path).headers["ETag"]
        assert conditional_get(alice, study_path, study_tag, wait="200ms").status_code == 304


def test_a_watch_holds_no_database_connection_while_it_waits(live_server):
    tracking(live_server)
    with live_server.client() as alice:
        path, etag = new_job(alice)
        pool = live_server.app.state.engine.pool
        results: list[int] = []

        def watch() -> None:
            with live_server.client() as client:
                results.append(conditional_get(client, path, etag, wait="3s").status_code)

        watchers = [threading.Thread(target=watch) for _ in range(30)]
        for thread in watchers:
            thread.start()
        time.sleep(1.0)
        assert live_server.app.state.changes.watching() == 30
        assert pool.checkedout() == 0
        assert alice.get("/v1/jobs").status_code == 200  # the pool still serves
        for thread in watchers:
            thread.join()
        assert results == [304] * 30


@pytest.mark.parametrize("wait", ["10h", "-1s", "", "1e3", "30 s"])
def test_a_bad_wait_is_refused_naming_the_field(live_server, wait):
    with live_server.client() as alice:
        job = submit(alice)
        response = alice.get(f"/v1/jobs/{job['id']}", params={"wait": wait})
        assert response.status_code == 422
        details = response.json()["error"]["details"]
        assert details[0]["field"] == "wait"


def test_a_wait_past_the_longest_is_shortened_to_it():
    from server.api.conditional import MAX_WAIT_SECONDS, wait_seconds

    assert wait_seconds("500ms") == 0.5 and wait_seconds("2m") == 120 and wait_seconds("7") == 7
    assert wait_seconds("301s") == wait_seconds("999999m") == MAX_WAIT_SECONDS == 300


def test_a_watch_whose_client_left_ends_at_once(live_server):
    """uvicorn does not cancel a request whose client is gone: the watch notices."""
    tracking(live_server)
    book = live_server.app.state.changes
    with live_server.client() as alice:
        path, etag = new_job(alice)
    with live_server.client() as impatient, pytest.raises(httpx.ReadTimeout):
        impatient.get(path, headers={"If-None-Match": etag}, params={"wait": "60s"}, timeout=0.5)
    deadline = time.monotonic() + 5
    while book.watching():
        assert time.monotonic() < deadline, "the watch outlived its client"
        time.sleep(0.05)


def test_a_stopping_server_ends_its_watches_at_once(live_server):
    tracking(live_server)
    with live_server.client() as alice:
        path, etag = new_job(alice)
        result: list[int] = []

        def watch() -> None:
            result.append(conditional_get(alice, path, etag, wait="60s").status_code)

        watcher = threading.Thread(target=watch)
        watcher.start()
        time.sleep(0.5)
        started = time.monotonic()
        live_server.stop()
        watcher.join(timeout=30)
        assert result == [304]
        assert time.monotonic() - started < 10
