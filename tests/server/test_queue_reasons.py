"""The dispatcher's account of why queued jobs wait, on SQLite and PostgreSQL: each
reason, the reason a requeued job keeps, and no write when nothing changed."""

from __future__ import annotations

from collections import Counter

from sqlalchemy import event, select

from server.db.models import Job, User
from server.dispatch import Dispatcher
from server.gpu_cards import GpuCards, Placement
from server.jobs.cluster import Capacity
from server.settings import Settings

REQUEUED = "attempt 1 lost (the worker stopped); it will resume from its checkpoint"


def add_job(session, owner: User, **values) -> int:
    job = Job(owner_id=owner.id, spec={}, spec_hash="h", status="queued", **values)
    session.add(job)
    session.flush()
    return job.id


def reasons(sessions) -> dict[int, str | None]:
    with sessions() as session:
        return dict(session.execute(select(Job.id, Job.queue_reason)).all())


def test_each_waiting_job_gets_its_reason_and_an_unchanged_queue_costs_no_write(
    sessions, database_url, tmp_path
):
    with sessions.begin() as session:
        alice, bob = User(name="alice"), User(name="bob")
        session.add_all([alice, bob])
        session.flush()
        ids = {
            "gpu": add_job(session, bob, gpus=1),
            "quota": add_job(session, alice, gpus=1),
            "cpus": add_job(session, bob, cpus=8),
            "dense": add_job(session, bob, dense_identity="d1"),
            "requeued": add_job(session, bob, cpus=8, queue_reason=REQUEUED),
            "fits": add_job(session, bob),
        }
    settings = Settings(database_url=database_url, data_dir=tmp_path, owner_gpu_quota=1)
    dispatcher = Dispatcher(settings, sessions, api_url="http://127.0.0.1:1")
    free = {"CPU": 2.0, "GPU": 0.5}
    cards = GpuCards({"node": 1})
    assert cards.occupy(0.5, Placement("node", (0,)))
    held = Counter({alice.id: 1.0})  # alice already holds her one GPU
    dispatcher._explain_waits(free, held, training_dense={"d1": 99}, capacity=None, cards=cards)

    assert reasons(sessions) == {
        ids["gpu"]: "waiting for 1 GPU (free: 0.5)",
        ids["quota"]: "the owner's GPU quota (1) is in use",
        ids["cpus"]: "waiting for 8 CPU (free: 2)",
        ids["dense"]: "waiting for job 99's dense training, which it shares",
        ids["requeued"]: REQUEUED,  # says why it came back until it runs again
        ids["fits"]: None,
    }

    statements: list[str] = []
    engine = sessions.kw["bind"]
    event.listen(engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    dispatcher._explain_waits(free, held, training_dense={"d1": 99}, capacity=None, cards=cards)
    assert statements and not [s for s in statements if s.lstrip().upper().startswith("UPDATE")]


def test_a_job_no_node_can_hold_says_it_cannot_run_on_this_cluster(
    sessions, database_url, tmp_path
):
    """Two nodes of 2 CPUs: 3 CPUs are free in all, yet no node can hold a job of 3
    (an attempt runs on one node), and no wait would change that."""
    node = {"CPU": 2.0, "GPU": 0.0, "memory_gb": 8.0}
    capacity = Capacity.of([node, node])
    with sessions.begin() as session:
        alice = User(name="alice")
        session.add(alice)
        session.flush()
        ids = {
            "cpus": add_job(session, alice, cpus=3),
            "gpu": add_job(session, alice, gpus=1),
            "memory": add_job(session, alice, memory_gb=12.5),
            "both": add_job(session, alice, cpus=4, gpus=0.5),
            "requeued": add_job(session, alice, cpus=3, queue_reason=REQUEUED),
            "fits": add_job(session, alice, cpus=2, memory_gb=8),
        }
    dispatcher = Dispatcher(
        Settings(database_url=database_url, data_dir=tmp_path), sessions, "http://127.0.0.1:1"
    )
    dispatcher._explain_waits(
        {"CPU": 3.0, "GPU": 0.0},
        Counter(),
        training_dense={},
        capacity=capacity,
        cards=GpuCards({"a": 0, "b": 0}),
    )

    cannot = "cannot run on this cluster as it stands: "
    assert reasons(sessions) == {
        ids["cpus"]: cannot + "asks 3 CPU, the largest node has 2",
        ids["gpu"]: cannot + "asks 1 GPU, the largest node has 0",
        ids["memory"]: cannot + "asks 12.5 GB memory, the largest node has 8",
        ids["both"]: cannot
        + "asks 4 CPU, the largest node has 2; asks 0.5 GPU, the largest node has 0",
        ids["requeued"]: cannot + "asks 3 CPU, the largest node has 2",  # it would wait forever
        ids["fits"]: None,
    }


def test_a_job_within_the_free_gpus_in_sum_but_on_no_card_says_what_each_card_has(
    sessions, database_url, tmp_path
):
    cards = GpuCards({"node": 4})
    for card in range(4):
        assert cards.occupy(0.75, Placement("node", (card,)))
    with sessions.begin() as session:
        alice = User(name="alice")
        session.add(alice)
        session.flush()
        ids = {
            "whole": add_job(session, alice, gpus=1),
            "two": add_job(session, alice, gpus=2),
            "half": add_job(session, alice, gpus=0.5),
            "quarter": add_job(session, alice, gpus=0.25),
        }
    dispatcher = Dispatcher(
        Settings(database_url=database_url, data_dir=tmp_path), sessions, "http://127.0.0.1:1"
    )
    free = {"CPU": 4.0, "GPU": 1.0}  # Ray's sum: a quarter on each card
    dispatcher._explain_waits(free, Counter(), training_dense={}, capacity=None, cards=cards)

    assert reasons(sessions) == {
        ids["whole"]: "waiting for 1 whole GPU (free: 0.25 on each of 4)",
        ids["two"]: "waiting for 2 GPU (free: 1)",  # not even in sum
        ids["half"]: "waiting for 0.5 GPU on one card (free: 0.25 on each of 4)",
        ids["quarter"]: None,
    }
