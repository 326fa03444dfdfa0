"""The prune-retrain engine, its records and its checkpoint store."""

from silo_contract.reports import CYCLE_COLUMNS, CycleResult, EpochEvent
from silo_core.engine.checkpoint import (
    CheckpointStore,
    DenseCache,
    LocalCheckpointStore,
    LocalDenseCache,
)
from silo_core.engine.runner import (
    CheckpointMismatchError,
    JobResult,
    PruningEngine,
    Reporter,
    RunStart,
    derived_seed,
)

__all__ = [
    "CYCLE_COLUMNS",
    "CheckpointMismatchError",
    "CheckpointStore",
    "CycleResult",
    "DenseCache",
    "EpochEvent",
    "JobResult",
    "LocalCheckpointStore",
    "LocalDenseCache",
    "PruningEngine",
    "Reporter",
    "RunStart",
    "derived_seed",
]
