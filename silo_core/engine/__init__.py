"""The prune-retrain engine, its records and its checkpoint store."""

from silo_contract.reports import CYCLE_COLUMNS, CycleResult, EpochEvent
from silo_core.engine.checkpoint import (
    CheckpointMismatchError,
    CheckpointState,
    CheckpointStore,
    LocalCheckpointStore,
    NullCheckpointStore,
)
from silo_core.engine.dense_sharing import DenseCache, LocalDenseCache, NullDenseCache
from silo_core.engine.epochs import derived_seed
from silo_core.engine.reporting import NullReporter, Reporter
from silo_core.engine.run_records import JobResult, RunStart
from silo_core.engine.runner import PruningEngine

__all__ = [
    "CYCLE_COLUMNS",
    "CheckpointMismatchError",
    "CheckpointState",
    "CheckpointStore",
    "CycleResult",
    "DenseCache",
    "EpochEvent",
    "JobResult",
    "LocalCheckpointStore",
    "LocalDenseCache",
    "NullCheckpointStore",
    "NullDenseCache",
    "NullReporter",
    "PruningEngine",
    "Reporter",
    "RunStart",
    "derived_seed",
]
