"""What a job reports, declared once: one event per epoch, one result per cycle.

Each record has a base of its figures, extended per direction, as the
service's other models are:

    EpochMetrics -> EpochEvent       what the engine emits and a worker sends
                 -> EpochEventIn     what the intake accepts (unknown fields kept)
                 -> EventOut         what the API serves (with seq, attempt, ...)
    CycleFigures -> CycleResult      the engine's cycle-table row
                 -> CycleResultIn    what the intake accepts
                 -> CycleOut         what the API serves

The server's event and cycle columns are the base models' fields, so a figure
added here is stored and served without another declaration.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator

from silo_contract.fields import (
    ARTIFACT_NAME_PATTERN,
    NOTE_LENGTH,
    BigCount,
    Count,
    JsonFloat,
    PositiveCount,
    Timestamp,
)

Seconds = Annotated[JsonFloat, Field(ge=0)]
MAX_EVENTS_PER_BATCH = 500


class EpochMetrics(BaseModel):
    """Progress after one epoch; the key (cycle, epoch) is unique within a job."""

    model_config = ConfigDict(frozen=True)

    cycle: Count
    epoch: PositiveCount  # 1-based within the cycle
    epochs: PositiveCount
    lr: JsonFloat  # at the epoch's last step
    max_lr: JsonFloat
    train_loss: JsonFloat
    train_accuracy: JsonFloat
    val_loss: JsonFloat
    val_accuracy: JsonFloat
    sparsity: JsonFloat
    seconds: Seconds


class EpochEvent(EpochMetrics):
    cycles: Count  # T, the planned number of pruning cycles after the dense one

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()


class CycleFigures(BaseModel):
    """One row of the cycle table. Test accuracy is read at the epoch chosen on
    validation accuracy and at the cycle's end; it never picks anything."""

    model_config = ConfigDict(frozen=True)

    cycle: Count
    sparsity: JsonFloat
    alive_weights: BigCount
    max_lr: JsonFloat
    best_epoch: Count
    best_val_accuracy: JsonFloat
    test_accuracy_at_best_val: JsonFloat
    final_val_accuracy: JsonFloat
    final_test_accuracy: JsonFloat
    seconds: Seconds


class CycleResult(CycleFigures):
    # What a schedule adds to its row, e.g. the Oracle's grid and its accuracies.
    extras: dict[str, Any] = Field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        return cls.model_validate({**data, "extras": dict(data.get("extras") or {})})


# The columns each record is stored in (extras go to cycles.json and the API, not the CSV).
EVENT_COLUMNS = tuple(EpochMetrics.model_fields)
CYCLE_COLUMNS = tuple(CycleFigures.model_fields)


# --- the intake ---------------------------------------------------------------------


class _Reported(BaseModel):
    """Fields beyond the known ones are kept in ``extras`` rather than refused,
    so a newer engine can report more without a schema change in the server."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False, frozen=True)

    extras: dict[str, Any] | None = None

    def row_values(self, columns: tuple[str, ...]) -> dict[str, Any]:
        """``columns`` as they are, everything else folded into ``extras``."""
        values = self.model_dump(exclude={"extras"})
        row = {name: values.pop(name) for name in columns}
        row["extras"] = {**values, **(self.extras or {})}
        return row


class EpochEventIn(_Reported, EpochEvent):
    """One epoch's progress, as the engine's ``EpochEvent`` writes it."""

    model_config = _Reported.model_config

    def row_values(self, columns: tuple[str, ...] = EVENT_COLUMNS) -> dict[str, Any]:
        return super().row_values(columns)


class CycleResultIn(_Reported, CycleFigures):
    """One cycle-table row, as the engine's ``CycleResult`` writes it."""

    model_config = _Reported.model_config

    def row_values(self, columns: tuple[str, ...] = CYCLE_COLUMNS) -> dict[str, Any]:
        return super().row_values(columns)


class EventBatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: list[EpochEventIn] = Field(min_length=1, max_length=MAX_EVENTS_PER_BATCH)

    @field_validator("events", mode="before")
    @classmethod
    def _bounded(cls, value: Any) -> Any:
        # Refuse an oversized batch before validating each of its events.
        if isinstance(value, list) and len(value) > MAX_EVENTS_PER_BATCH:
            raise ValueError(f"at most {MAX_EVENTS_PER_BATCH} events per batch (got {len(value)})")
        return value


class ArtifactIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=ARTIFACT_NAME_PATTERN)
    size: BigCount
    checksum: str = Field(pattern=r"^[0-9a-fA-F]{64}$", description="SHA-256, hex")
    location: str = Field(
        min_length=1, max_length=4096, description="A file in the job's output folder"
    )


class StatusIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: Literal["running", "succeeded", "failed", "cancelled"]
    message: str | None = Field(default=None, max_length=10_000)
    note: str | None = Field(
        default=None,
        max_length=NOTE_LENGTH,
        description="With running: what the job does while no epoch is reported; null clears",
    )


# --- the API's answers --------------------------------------------------------------


class EventOut(EpochMetrics):
    model_config = ConfigDict(from_attributes=True)

    seq: int
    attempt: int
    superseded: bool
    extras: dict[str, Any]
    created_at: Timestamp


class EventPage(BaseModel):
    items: list[EventOut]
    next_after: int = Field(description="Pass as ?after= to read on")


class CycleOut(CycleFigures):
    model_config = ConfigDict(from_attributes=True)

    attempt: int
    extras: dict[str, Any]


class CycleList(BaseModel):
    items: list[CycleOut]
