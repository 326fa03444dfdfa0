"""What a job stores at submit beside its spec, on SQLite and PostgreSQL: its plan
(the spec's names, planned cycles and epochs, which lists and polls show without
reading the spec) and its resources; and the migration that plans older jobs."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import command
from api_jobs import SPEC, spec, submit
from servers import database_session as db

from server.db.migrate import alembic_config, current_revision, upgrade
from server.db.models import Job, User
from server.db.session import make_engine

PLAN = ("model", "dataset", "schedule", "planned_cycles", "dense_epochs", "epochs_per_cycle")


def test_a_listed_job_carries_its_spec_names_and_progress(live_server):
    with live_server.client("alice") as alice:
        waiting = submit(alice)["id"]
        other = spec(model__name="lenet5", schedule__name="lr_rewind", pruning__cycles=5)
        other["schedule"].pop("preset")
        running = submit(alice, spec=other)["id"]
        with db(live_server) as session:
            job = session.get(Job, running)
            job.status, job.started_at, job.attempt = "running", datetime.now(UTC), 1
            job.progress_cycle, job.progress_epoch = 2, 1
            job.progress_sparsity, job.best_accuracy = 0.36, 0.91
        items = {item["id"]: item for item in alice.get("/v1/jobs").json()["items"]}

        timeless = ("elapsed_seconds", "eta_seconds")

        def drop(progress):  # the clock moves between the two reads
            return {k: v for k, v in progress.items() if k not in timeless}

        for job_id, names in ((waiting, ("mlp", "silo")), (running, ("lenet5", "lr_rewind"))):
            listed, read = items[job_id], alice.get(f"/v1/jobs/{job_id}").json()
            assert (listed["model"], listed["schedule"], listed["dataset"]) == (*names, "digits")
            for key in ("model", "dataset", "schedule", "status", "tags"):
                assert listed[key] == read[key]
            assert drop(listed["progress"]) == drop(read["progress"])
        assert items[running]["progress"] | dict.fromkeys(timeless) == {
            "cycle": 2,
            "cycles": 5,
            "epoch": 1,
            "epochs": 2,
            "sparsity": 0.36,
            "best_accuracy": 0.91,
            "elapsed_seconds": None,
            "eta_seconds": None,
            "note": None,
        }
        assert items[running]["progress"]["eta_seconds"] > 0
        assert items[waiting]["progress"]["cycle"] is None


def test_lists_and_polls_read_the_plan_stored_at_submit_not_the_spec(live_server):
    with live_server.client("alice") as alice:
        job_id = submit(alice)["id"]
        with db(live_server) as session:
            session.get(Job, job_id).spec = {}  # a spec no version could read
            owner = session.scalar(sa.select(User.id).where(User.name == "alice"))
            unplanned = Job(owner_id=owner, spec=SPEC, spec_hash="x", status="queued")
            session.add(unplanned)
            session.flush()
            unplanned_id = unplanned.id
        for _ in range(3):
            listed = alice.get("/v1/jobs")
            assert listed.status_code == 200, listed.text
            items = {item["id"]: item for item in listed.json()["items"]}
            assert items[job_id]["schedule"] == "silo"
            read = alice.get(f"/v1/jobs/{job_id}")
            assert read.status_code == 200 and read.json()["progress"]["cycles"] == 3
        # A job stored without a plan shows none, whatever its spec says.
        for shown in (items[unplanned_id], alice.get(f"/v1/jobs/{unplanned_id}").json()):
            assert (shown["model"], shown["dataset"], shown["schedule"]) == (None, None, None)
            assert shown["progress"]["cycles"] is None


def test_study_members_store_their_plans(live_server):
    schedules = [{"name": "silo", "preset": "resnet20"}, {"name": "lr_rewind"}]
    study = {"spec": SPEC, "schedules": schedules, "seeds": [0, 1]}
    with live_server.client("alice") as alice:
        created = alice.post("/v1/studies", json=study)
        assert created.status_code == 201, created.text
        members = created.json()["members"]
    assert {member["progress"]["cycles"] for member in members} == {3}
    with db(live_server) as session:
        rows = session.execute(
            sa.select(Job.study_label, *(getattr(Job, name) for name in PLAN)).where(
                Job.id.in_([member["job_id"] for member in members])
            )
        ).all()
    assert sorted(rows) == [
        ("lr_rewind", "mlp", "digits", "lr_rewind", 3, 4, 2),
        ("lr_rewind", "mlp", "digits", "lr_rewind", 3, 4, 2),
        ("silo", "mlp", "digits", "silo", 3, 4, 2),
        ("silo", "mlp", "digits", "silo", 3, 4, 2),
    ]


def test_resources_are_stored_shown_and_checked(live_server):
    with live_server.client() as client:
        job = submit(client, resources={"cpus": 2, "gpus": 0.25, "memory_gb": 3})
        assert job["resources"] == {"cpus": 2.0, "gpus": 0.25, "memory_gb": 3.0}
        assert submit(client)["resources"] == {"cpus": 1.0, "gpus": 0.0, "memory_gb": None}
        for bad, field in (({"gpus": -1}, "gpus"), ({"cpus": 0}, "cpus"), ({"tpus": 1}, "tpus")):
            response = client.post("/v1/jobs", json={"spec": SPEC, "resources": bad})
            assert response.status_code == 422, response.text
            assert field in response.json()["error"]["message"]


# --- the migration ---------------------------------------------------------------------

# The tables as revision 0007 left them, as far as the test writes them.
USERS = sa.table("users", *map(sa.column, ("id", "name", "is_admin", "created_at")))
JOBS = sa.table(
    "jobs",
    *(sa.column(name) for name in ("id", "owner_id", "spec_hash", "status", "created_at")),
    *(sa.column(name) for name in ("priority", "attempt", "event_seq")),
    sa.column("spec", sa.JSON),
)
TAGS = sa.table("job_tags", sa.column("job_id"), sa.column("tag"))
UNREADABLE = [
    {},  # no fields at all
    {**SPEC, "model": {"name": "no-such-model"}},  # a plug-in that is not installed
    {**SPEC, "colour": "blue"},  # a field this version does not know
    ["not", "a", "mapping"],
]
PLANNED = 1001  # more than two of the migration's batches


def test_migration_0008_plans_the_jobs_it_finds(empty_database_url):
    url = empty_database_url
    upgrade(url, "0007")
    engine = make_engine(url)
    now = datetime.now(UTC)
    pruning, training = {"fraction": 0.5, "target_sparsity": 0.9}, {"epochs_per_cycle": 5}
    target = {**SPEC, "pruning": pruning, "training": training}  # 4 cycles
    specs = [SPEC] * PLANNED + [target] + UNREADABLE
    with engine.begin() as connection:  # rows as revision 0007 wrote them
        owner = connection.execute(
            USERS.insert().values(name="old", is_admin=False, created_at=now).returning(USERS.c.id)
        ).scalar_one()
        common = {"owner_id": owner, "spec_hash": "h", "status": "queued", "created_at": now}
        zeros = {"priority": 0, "attempt": 0, "event_seq": 0}
        rows = [{"id": n, "spec": spec, **common, **zeros} for n, spec in enumerate(specs, 1)]
        connection.execute(JOBS.insert(), rows)
        connection.execute(TAGS.insert(), [{"job_id": 1, "tag": "kept"}])
    engine.dispose()

    upgrade(url)
    engine = make_engine(url)
    query = sa.select(sa.column("id"), *map(sa.column, PLAN)).select_from(sa.table("jobs"))
    with engine.connect() as connection:
        plans = {row[0]: tuple(row[1:]) for row in connection.execute(query.order_by("id"))}
        # Batch mode did not recreate the jobs table (which would cascade to its tags).
        assert connection.execute(sa.select(TAGS.c.tag)).scalars().all() == ["kept"]
    engine.dispose()
    assert len(plans) == len(specs)
    planned = ("mlp", "digits", "silo", 3, 4, 2)
    assert all(plans[n] == planned for n in range(1, PLANNED + 1))
    assert plans[PLANNED + 1] == ("mlp", "digits", "silo", 4, 5, 5)
    unplanned = (None,) * len(PLAN)
    assert [plans[n] for n in range(PLANNED + 2, len(specs) + 1)] == [unplanned] * len(UNREADABLE)

    command.downgrade(alembic_config(url), "0007")
    engine = make_engine(url)  # a fresh inspector after the schema changed
    assert current_revision(engine) == "0007"
    assert not {c["name"] for c in sa.inspect(engine).get_columns("jobs")} & set(PLAN)
    with engine.connect() as connection:
        assert connection.execute(sa.select(sa.func.count()).select_from(JOBS)).scalar() == len(
            specs
        )
        assert connection.execute(sa.select(TAGS.c.tag)).scalars().all() == ["kept"]
    engine.dispose()
