"""Column types of our own."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, Dialect
from sqlalchemy.types import TypeDecorator

from silo_contract.fields import as_utc  # a naive time is UTC already: the service writes no other


class UtcDateTime(TypeDecorator[datetime]):
    """A point in time, stored as UTC and always read back as an aware UTC datetime.

    The column is DateTime(timezone=True) (PostgreSQL's timestamptz). SQLite keeps
    no zone: its text drops one and reads back naive datetimes, and a time in
    another zone would be stored as that zone's wall clock. So every value is
    turned into UTC on the way in and marked UTC on the way out, and code that
    reads a time compares and subtracts it as it is.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    # The same on every dialect: ``dialect`` is SQLAlchemy's argument, unused.
    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:  # noqa: ARG002
        return as_utc(value) if isinstance(value, datetime) else value

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:  # noqa: ARG002
        return None if value is None else as_utc(value)
