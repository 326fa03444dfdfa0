"""Migrations, the schema check, the status state machine, tokens and DB-level keys."""

import itertools
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import inspect, select
from sqlalchemy.exc import IntegrityError

from server.auth.tokens import (
    Caller,
    TokenCache,
    TokenRefusedError,
    caller_for_token,
    create_user_token,
    hash_token,
)
from server.db.migrate import SchemaBehindError, check_schema, current_revision, head_revision
from server.db.models import ApiToken, Job, JobEvent, User, utcnow
from server.db.session import make_engine, make_session_factory
from server.jobs.states import ALLOWED, IllegalTransitionError, transition
from silo_contract.status import JobStatus

TABLES = {
    "users",
    "api_tokens",
    "jobs",
    "job_tags",
    "job_attempts",
    "job_events",
    "cycle_results",
    "artifacts",
    "audit_events",
    "cluster_capacity",
}


def test_migrations_from_empty_create_every_table(database_url):
    engine = make_engine(database_url)
    assert set(inspect(engine).get_table_names()) >= TABLES
    assert current_revision(engine) == head_revision()
    check_schema(engine)  # does not raise


def test_empty_database_is_refused_with_the_fix(empty_database_url):
    engine = make_engine(empty_database_url)
    with pytest.raises(SchemaBehindError, match="run `silo db upgrade`"):
        check_schema(engine)


def test_sqlite_runs_in_wal_mode_with_foreign_keys(tmp_path):
    from server.db.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'x.db'}"
    upgrade(url)
    with make_engine(url).connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_tokens_are_stored_hashed_and_resolve_to_their_user(database_url):
    factory = make_session_factory(make_engine(database_url))
    with factory.begin() as session:
        token = create_user_token(session, "alice", admin=True)
    with factory() as session:
        stored = session.scalars(select(ApiToken.token_hash)).all()
        assert stored == [hash_token(token)]
        assert token not in stored
        caller = caller_for_token(session, token)
        assert caller.name == "alice" and caller.is_admin and caller.token_prefix == token[:12]
        with pytest.raises(TokenRefusedError, match="unknown"):
            caller_for_token(session, token + "x")
    with factory.begin() as session:
        session.execute(ApiToken.__table__.update().values(revoked_at=utcnow()))
    with factory() as session, pytest.raises(TokenRefusedError, match="revoked"):
        caller_for_token(session, token)


def test_token_cache_trusts_a_resolved_token_only_for_its_ttl(database_url):
    factory = make_session_factory(make_engine(database_url))
    with factory.begin() as session:
        token = create_user_token(session, "carol")
    cache, uncached = TokenCache(ttl=0.5), TokenCache(ttl=0)
    assert cache.get(token) is None  # never seen: the caller must resolve it
    with factory() as session:
        with pytest.raises(TokenRefusedError):
            cache.resolve(session, "silo_unknown")
        assert cache.get("silo_unknown") is None  # failures are not remembered
        caller = cache.resolve(session, token)
        assert (caller.name, caller.is_admin, caller.expires_at) == ("carol", False, None)
        assert isinstance(caller, Caller)
        assert uncached.resolve(session, token) == caller
    assert cache.get(token) == caller
    assert uncached.get(token) is None
    with factory.begin() as session:
        session.execute(ApiToken.__table__.update().values(revoked_at=utcnow()))
    assert cache.get(token) == caller  # still trusted within the TTL...
    time.sleep(0.6)
    assert cache.get(token) is None  # ...and looked up again after it
    with factory() as session, pytest.raises(TokenRefusedError):
        cache.resolve(session, token)


def test_event_key_is_unique_in_the_database(database_url):
    factory = make_session_factory(make_engine(database_url))
    with factory.begin() as session:
        user = User(name="bob")
        session.add(user)
        session.flush()
        job = Job(owner_id=user.id, spec={}, spec_hash="h")
        session.add(job)
        session.flush()
        job_id = job.id
    row = {
        "job_id": job_id,
        "attempt": 1,
        "cycle": 0,
        "epoch": 1,
        "epochs": 2,
        "lr": 0.1,
        "max_lr": 0.1,
        "train_loss": 1.0,
        "train_accuracy": 0.5,
        "val_loss": 1.0,
        "val_accuracy": 0.5,
        "sparsity": 0.0,
        "seconds": 1.0,
    }
    with factory.begin() as session:
        session.add(JobEvent(seq=1, **row))
    with pytest.raises(IntegrityError), factory.begin() as session:
        session.add(JobEvent(seq=2, **row))


@pytest.mark.parametrize("old", list(JobStatus))
@pytest.mark.parametrize("new", list(JobStatus))
def test_state_machine_allows_exactly_the_listed_transitions(old, new):
    if new in ALLOWED[old]:
        assert transition(old, new) == new
    else:
        with pytest.raises(IllegalTransitionError, match=f"a {old} job cannot become {new}"):
            transition(old, new)


def test_the_lifecycle_paths_of_the_design_are_allowed():
    for path in (
        ["queued", "running", "succeeded"],
        ["queued", "running", "cancelling", "cancelled", "queued", "running", "failed"],
        ["queued", "cancelled"],
        ["queued", "running", "queued", "running", "succeeded"],
    ):
        for old, new in itertools.pairwise(path):
            transition(old, new)


def silo(*args, env):
    exe = Path(sys.executable).with_name("silo")
    return subprocess.run(
        [str(exe), *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )


def test_token_cli_needs_a_current_schema_then_prints_a_token(tmp_path):
    import os

    env = {**os.environ, "SILO_DATA_DIR": str(tmp_path), "COLUMNS": "200"}
    env.pop("SILO_DATABASE_URL", None)
    refused = silo("token", "create", "--user", "carol", env=env)
    assert refused.returncode == 1
    assert "run `silo db upgrade`" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert silo("db", "upgrade", env=env).returncode == 0
    bad = silo("token", "create", "--user", "no spaces", env=env)
    assert bad.returncode == 2 and "error: --user:" in bad.stderr
    made = silo("token", "create", "--user", "carol", env=env)
    assert made.returncode == 0 and made.stdout.startswith("silo_")
    assert silo("db", "current", env=env).stdout.startswith(head_revision())


def test_server_refuses_to_start_on_a_schema_behind(empty_database_url, tmp_path):
    import os

    # The embedded SQLite default upgrades itself unless told not to.
    sqlite = empty_database_url.startswith("sqlite")
    extra = {"SILO_AUTO_UPGRADE_SQLITE": "false"} if sqlite else {}
    env = {
        **os.environ,
        "SILO_DATA_DIR": str(tmp_path),
        "SILO_DATABASE_URL": empty_database_url,
        **extra,
    }
    refused = silo("serve", "--port", "1", env=env)
    assert refused.returncode == 1
    assert "the database schema is at nothing" in refused.stderr
    assert "run `silo db upgrade`" in refused.stderr


@pytest.mark.parametrize(
    ("command", "variable", "value", "says"),
    [
        ("serve", "SILO_MAX_ATTEMPTS", "0", "greater than or equal to 1"),
        ("serve", "SILO_ARTIFACT_ROOT", "s3://bucket/silo", "not a URL"),
        ("dispatcher", "SILO_DISPATCH_INTERVAL_SECONDS", "soon", "valid number"),
    ],
)
def test_a_wrong_setting_is_named_without_a_traceback(tmp_path, command, variable, value, says):
    import os

    env = {**os.environ, "SILO_DATA_DIR": str(tmp_path), variable: value}
    refused = silo(command, env=env)
    assert refused.returncode == 2
    assert f"error: {variable}: " in refused.stderr
    assert says in refused.stderr
    assert "Traceback" not in refused.stderr


def test_a_dispatcher_of_its_own_is_refused_on_sqlite(tmp_path):
    """Its commits would not reach the API's answers (SQLite has no NOTIFY)."""
    import os

    env = {
        **os.environ,
        "SILO_DATA_DIR": str(tmp_path),
        "SILO_DATABASE_URL": f"sqlite:///{tmp_path / 'silo.db'}",
        "SILO_API_URL": "http://127.0.0.1:8000",
    }
    refused = silo("dispatcher", env=env)
    assert refused.returncode == 2
    assert "error: SILO_DATABASE_URL: a dispatcher of its own needs PostgreSQL" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_the_models_match_the_migrations(database_url):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from server.db.models import Base

    engine = make_engine(database_url)
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    engine.dispose()
    assert differences == []


def test_every_time_column_stores_utc_and_reads_back_aware_utc(database_url):
    from datetime import UTC, datetime, timedelta, timezone

    from sqlalchemy import DateTime

    from server.db.models import Base
    from server.db.types import UtcDateTime

    columns = [column for table in Base.metadata.tables.values() for column in table.columns]
    times = [column for column in columns if column.type._type_affinity is DateTime]
    assert times and all(isinstance(column.type, UtcDateTime) for column in times), times

    engine = make_engine(database_url)
    factory = make_session_factory(engine)
    noon_utc = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    elsewhere = noon_utc.astimezone(timezone(timedelta(hours=-5)))  # 07:00 at UTC-5
    with factory.begin() as session:
        session.add(User(name="zoned", created_at=elsewhere))
        session.add(User(name="naive", created_at=noon_utc.replace(tzinfo=None)))
    with factory() as session:
        for name in ("zoned", "naive"):
            read = session.scalar(select(User.created_at).where(User.name == name))
            assert read == noon_utc and read.tzinfo is UTC, (name, read)
        # Compared in SQL as the same instant, whatever zone the bound value is in.
        found = session.scalars(select(User.name).where(User.created_at == elsewhere)).all()
        assert sorted(found) == ["naive", "zoned"]
        user = session.scalar(select(User).where(User.name == "zoned"))
        assert user.created_at == noon_utc and user.created_at.tzinfo is UTC
    engine.dispose()
