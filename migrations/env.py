"""Alembic environment: the URL comes from the caller's config (see server/db/migrate.py)."""

from __future__ import annotations

from typing import Any

from alembic import context
from alembic.autogenerate.api import AutogenContext

from server.db.models import Base
from server.db.session import make_engine
from server.db.types import UtcDateTime

config = context.config
target_metadata = Base.metadata


def render_item(kind: str, item: Any, autogen: AutogenContext) -> str | bool:  # noqa: ARG001
    """Write UtcDateTime as the column it is, so a generated revision needs no
    import of the server (revisions stay readable on their own)."""
    if kind == "type" and isinstance(item, UtcDateTime):
        return "sa.DateTime(timezone=True)"
    return False  # alembic's own rendering


def run_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
        render_item=render_item,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    url = config.get_main_option("sqlalchemy.url")
    assert url is not None
    engine = make_engine(url)
    with engine.connect() as connection:
        # Batch mode lets later migrations alter SQLite tables (copy-and-move).
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=True,
            render_item=render_item,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
