"""Alembic, driven from code: upgrade a database and tell whether it is current."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

# A package of its own, so an installed (not editable) server finds its migrations.
MIGRATIONS_DIR = Path(str(files("migrations")))


class SchemaBehindError(RuntimeError):
    """The database's schema is older than this code expects."""


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # '%' is ConfigParser interpolation syntax; URLs may hold it in passwords.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None, "the migrations folder has no revisions"
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def check_schema(engine: Engine) -> None:
    """Raise SchemaBehindError with the command that fixes it."""
    current, head = current_revision(engine), head_revision()
    if current != head:
        raise SchemaBehindError(
            f"the database schema is at {current or 'nothing (empty database)'}, "
            f"this server needs {head}: run `silo db upgrade` (with the same SILO_DATABASE_URL)"
        )
