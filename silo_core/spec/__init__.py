"""The JobSpec and how to read one."""

from silo_core.spec.load import SpecError, format_validation_error, load_spec, parse_spec
from silo_core.spec.model import (
    DatasetSpec,
    DenseTrainingSpec,
    JobSpec,
    ModelSpec,
    OptimizerSpec,
    PruningSpec,
    TrainingSpec,
)
from silo_core.spec.schedules import (
    CLRScheduleSpec,
    ConstantScheduleSpec,
    FineTuneScheduleSpec,
    LRRewindScheduleSpec,
    OracleScheduleSpec,
    ScheduleSpec,
    SiloScheduleSpec,
    SLRScheduleSpec,
)

__all__ = [
    "CLRScheduleSpec",
    "ConstantScheduleSpec",
    "DatasetSpec",
    "DenseTrainingSpec",
    "FineTuneScheduleSpec",
    "JobSpec",
    "LRRewindScheduleSpec",
    "ModelSpec",
    "OptimizerSpec",
    "OracleScheduleSpec",
    "PruningSpec",
    "SLRScheduleSpec",
    "ScheduleSpec",
    "SiloScheduleSpec",
    "SpecError",
    "TrainingSpec",
    "format_validation_error",
    "load_spec",
    "parse_spec",
]
