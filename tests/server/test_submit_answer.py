"""A submit answers with the job it stored, as a read of that job shows it.

The submit builds its answer from what it wrote and what its insert returned
(the owner's name, the queue position) instead of reading the job back; these
tests hold it to the read, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import threading
from datetime import timedelta

from api_jobs import SPEC, spec, submit
from servers import database_session
from sqlalchemy import insert, select

from server.db.models import Job, User, utcnow
from silo_contract.jobs import QUEUE_COUNT_LIMIT


def _place(position: int, reason: str, more_ahead: bool = False) -> dict:
    return {"position": position, "more_ahead": more_ahead, "reason": reason}


def _read(client, job_id: int) -> dict:
    response = client.get(f"/v1/jobs/{job_id}")
    assert response.status_code == 200, response.text
    return response.json()


def test_the_answer_is_the_job_as_read_back(live_server):
    with live_server.client("alice") as alice, live_server.client("bob") as bob:
        bodies = [
            {"name": "first", "tags": ["zeta", "alpha", "zeta"]},
            {"priority": 5, "resources": {"cpus": 2, "gpus": 0.5, "memory_gb": 3}},
            {"spec": {**spec(pruning__target_sparsity=0.9), "optimizer": {"weight_decay": 1e-5}}},
            {"priority": -3, "tags": ["low"]},
            {"priority": 5, "name": "second at five"},
        ]
        answers = []
        for n, body in enumerate(bodies):
            client = bob if n == 3 else alice
            answer = submit(client, **body)
            assert answer == _read(client, answer["id"]), body
            answers.append(answer)

        positions = [answer["queue"] for answer in answers]
        assert positions == [
            _place(1, "next to run"),
            _place(1, "next to run"),
            _place(3, "2 jobs ahead"),
            _place(4, "3 jobs ahead"),
            _place(2, "1 job ahead"),
        ]
        assert answers[0]["tags"] == ["alpha", "zeta"]
        assert answers[1]["resources"] == {"cpus": 2.0, "gpus": 0.5, "memory_gb": 3.0}
        assert answers[3]["owner"] == "bob"

        # Jobs no longer queued are not ahead of a new one.
        assert alice.post(f"/v1/jobs/{answers[1]['id']}/cancel").status_code == 200
        later = submit(alice, priority=5)
        assert later["queue"] == _place(2, "1 job ahead")
        assert later == _read(alice, later["id"])


def test_a_repeat_answers_the_first_job_as_it_is_now(live_server):
    with live_server.client("alice") as alice:
        headers = {"Idempotency-Key": "once"}
        first = alice.post("/v1/jobs", json={"spec": SPEC, "tags": ["t"]}, headers=headers)
        assert first.status_code == 201
        assert first.json() == _read(alice, first.json()["id"])
        assert alice.post(f"/v1/jobs/{first.json()['id']}/cancel").status_code == 200

        again = alice.post("/v1/jobs", json={"spec": SPEC, "tags": ["t"]}, headers=headers)
        assert again.status_code == 200
        assert again.json()["status"] == "cancelled"
        assert again.json() == _read(alice, first.json()["id"])

        other = alice.post("/v1/jobs", json={"spec": SPEC}, headers=headers)
        assert other.status_code == 409
        assert other.json()["error"]["details"] == {"job_id": first.json()["id"]}

        # Another owner's use of the key is theirs.
        with live_server.client("bob") as bob:
            theirs = bob.post("/v1/jobs", json={"spec": SPEC}, headers=headers)
            assert theirs.status_code == 201
            assert theirs.json()["owner"] == "bob"
            assert theirs.json()["queue"] == _place(1, "next to run")


def test_concurrent_submits_each_store_one_job(live_server):
    """Submits at once (on SQLite they take turns on the writer's lock): every one
    is stored once, with its tags, and the queue they make has no gaps."""
    results: list[tuple[int, dict]] = []

    def submitter() -> None:
        with live_server.client("alice") as alice:
            for _ in range(5):
                response = alice.post("/v1/jobs", json={"spec": SPEC, "tags": ["burst"]})
                results.append((response.status_code, response.json()))

    threads = [threading.Thread(target=submitter) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert [code for code, _ in results] == [201] * 30
    assert len({answer["id"] for _, answer in results}) == 30
    with live_server.client("alice") as alice:
        read = [_read(alice, answer["id"]) for _, answer in results]
    assert sorted(job["queue"]["position"] for job in read) == list(range(1, 31))
    assert all(job["tags"] == ["burst"] for job in read)


def test_a_long_queue_is_counted_up_to_its_limit_and_said_to_go_on(live_server):
    """The place is exact up to QUEUE_COUNT_LIMIT jobs ahead; past it the answer
    says so instead of walking the whole queue, at submit and at read alike."""
    with live_server.client("alice") as alice:
        first = submit(alice)
        with database_session(live_server) as session:
            owner_id = session.scalar(select(User.id).where(User.name == "alice"))
            row = session.execute(select(Job.spec, Job.spec_hash).where(Job.id == first["id"]))
            job_spec, spec_hash = row.one()
            start = utcnow() - timedelta(hours=1)
            rows = [
                {
                    "owner_id": owner_id,
                    "spec": job_spec,
                    "spec_hash": spec_hash,
                    "status": "queued",
                    "priority": 7,
                    "created_at": start + timedelta(milliseconds=n),
                }
                for n in range(QUEUE_COUNT_LIMIT - 1)
            ]
            session.execute(insert(Job), rows)
        # The earlier job has the LIMIT - 1 higher-priority jobs ahead of it now.
        assert _read(alice, first["id"])["queue"]["position"] == QUEUE_COUNT_LIMIT

        at_limit = submit(alice)  # LIMIT jobs ahead: still counted exactly
        assert at_limit["queue"] == _place(QUEUE_COUNT_LIMIT + 1, f"{QUEUE_COUNT_LIMIT} jobs ahead")
        past = submit(alice)  # LIMIT + 1 ahead: a lower bound
        expected = _place(
            QUEUE_COUNT_LIMIT + 1, f"over {QUEUE_COUNT_LIMIT:,} jobs ahead", more_ahead=True
        )
        assert past["queue"] == expected
        assert past == _read(alice, past["id"])
        assert submit(alice, priority=8)["queue"] == _place(1, "next to run")
