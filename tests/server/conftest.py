"""Databases for server tests: a SQLite file and a fresh PostgreSQL database.

The PostgreSQL database is created for the test session and dropped after it.
PostgreSQL must be reachable (./dev test starts the local cluster); when it is
not, the tests that need it fail with the reason instead of being skipped.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

PG_ADMIN_URL = os.environ.get(
    "SILO_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    name = f"silo_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        pytest.fail(f"PostgreSQL is not usable at {PG_ADMIN_URL}: {exc}", pytrace=False)
    yield make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database_url(request, tmp_path) -> Iterator[str]:
    """An empty database of each kind (PostgreSQL: a schema reset per test)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'silo.db'}"
        return
    url = request.getfixturevalue("postgres_url")
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    engine.dispose()
    yield url


@pytest.fixture
def database_url(empty_database_url: str) -> str:
    """A database of each kind with the schema at head."""
    from server.db.migrate import upgrade

    upgrade(empty_database_url)
    return empty_database_url
