"""What a worker reports is declared once as data (silo_core.records) and again as
the API's contract: the intake's input models and the client's output models. These
tests keep the declarations in step, so a field added to a record cannot be dropped
silently on its way to a user."""

from __future__ import annotations

from dataclasses import fields

from server.api.intake import CycleResultIn, EpochEventIn
from server.db.models import CycleResultRow, JobEvent
from server.jobs.reports import CYCLE_VALUE_COLUMNS, EVENT_COLUMNS
from silo_client.models import CycleOut, EventOut
from silo_core.records import CycleResult, EpochEvent


def names(record: type) -> set[str]:
    return {f.name for f in fields(record)}


def test_the_intake_takes_exactly_the_fields_a_record_has():
    assert set(EpochEventIn.model_fields) - {"extras"} == names(EpochEvent)
    assert set(CycleResultIn.model_fields) - {"extras"} == names(CycleResult) - {"extras"}


def test_every_reported_value_has_a_column_and_reaches_the_client():
    # An event's planned cycle count is kept in its extras, not a column.
    assert set(EVENT_COLUMNS) == names(EpochEvent) - {"cycles"}
    assert set(CYCLE_VALUE_COLUMNS) | {"cycle"} == names(CycleResult) - {"extras"}
    assert set(EVENT_COLUMNS) <= set(JobEvent.__table__.columns.keys())
    assert set(CYCLE_VALUE_COLUMNS) <= set(CycleResultRow.__table__.columns.keys())
    assert set(EVENT_COLUMNS) | {"extras"} <= set(EventOut.model_fields)
    assert names(CycleResult) <= set(CycleOut.model_fields)
