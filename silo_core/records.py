"""What a job reports: one event per epoch, one result per cycle."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass(frozen=True)
class EpochEvent:
    """Progress after one epoch; the key (cycle, epoch) is unique within a job."""

    cycle: int
    epoch: int  # 1-based within the cycle
    epochs: int
    cycles: int  # T, the planned number of pruning cycles after the dense one
    lr: float  # at the epoch's last step
    max_lr: float
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    sparsity: float
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class EpochScores:
    """What the engine keeps per epoch besides the event: the accuracies it
    picks the cycle's best epoch with (the test accuracy is only read)."""

    val_loss: float
    val_accuracy: float
    test_accuracy: float


@dataclass(frozen=True)
class CycleResult:
    """One row of the cycle table. Test accuracy is read at the epoch chosen on
    validation accuracy and at the cycle's end; it never picks anything."""

    cycle: int
    sparsity: float
    alive_weights: int
    max_lr: float
    best_epoch: int
    best_val_accuracy: float
    test_accuracy_at_best_val: float
    final_val_accuracy: float
    final_test_accuracy: float
    seconds: float
    # What a schedule adds to its row, e.g. the Oracle's grid and its accuracies.
    extras: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CycleResult:
        values = {f.name: data[f.name] for f in fields(cls) if f.name != "extras"}
        return cls(**values, extras=dict(data.get("extras") or {}))


# The cycle table's columns (extras go to cycles.json and the API, not the CSV).
CYCLE_COLUMNS = tuple(f.name for f in fields(CycleResult) if f.name != "extras")
