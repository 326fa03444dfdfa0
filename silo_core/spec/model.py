"""The JobSpec: one pydantic model for a whole pruning job.

The server accepts exactly this model, so every field is constrained where it
is declared (and the JSON schema says so), unknown keys are refused, and the
schedule is a union tagged by ``name`` so an error names the schedule's own
fields.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, ConfigDict, Field, StrictBool, model_validator

from silo_contract.fields import Integral, JsonFloat, Strictly
from silo_core.plugins import DATASETS, MODELS, PRUNING_METHODS, Registry
from silo_core.spec.common import Fraction, PositiveLR, SpecPart, StepDecayShape
from silo_core.spec.schedules import ScheduleSpec

MAX_SEED = 2**31 - 1
MAX_CYCLES = 200  # prune-retrain cycles of one job


def _provided_by(registry: Registry) -> AfterValidator:
    """Refuse a name ``registry`` does not provide: a built-in or an installed plug-in's
    (read from the plug-ins' metadata, importing none of them); a 422 lists what is available."""

    def check(value: str) -> str:
        registry.get(value)  # UnknownNameError, a ValueError, lists the available names
        return value

    return AfterValidator(check)


def _names_of(registry: Registry) -> Callable[[dict[str, Any]], None]:
    """The JSON schema's ``enum``: the names installed when the schema is made
    (once per API process)."""

    def enum(schema: dict[str, Any]) -> None:
        schema["enum"] = list(registry.names())

    return enum


ModelName = Annotated[str, _provided_by(MODELS), Field(json_schema_extra=_names_of(MODELS))]
DatasetName = Annotated[str, _provided_by(DATASETS), Field(json_schema_extra=_names_of(DATASETS))]
PruningMethod = Annotated[
    str, _provided_by(PRUNING_METHODS), Field(json_schema_extra=_names_of(PRUNING_METHODS))
]
OptionName = Annotated[str, Field(min_length=1, max_length=64)]
OptionValue = Annotated[int, Strictly, Field(ge=0, le=MAX_SEED), Integral]


# What model.weights may name: an uploaded file, an artifact of an earlier job, or
# (``silo run`` only; the API refuses it) a local path.
FILE_REFERENCE = r"^file:(?P<file>[1-9][0-9]{0,15})$"
JOB_REFERENCE = r"^job:(?P<job>[1-9][0-9]{0,15})/(?P<artifact>[A-Za-z0-9][A-Za-z0-9._-]{0,199})$"
WEIGHTS_FORMS = "file:<id> (an uploaded file) or job:<id>/<artifact> (e.g. job:12/model.pt)"


def weights_reference(value: str) -> tuple[str, int, str | None] | None:
    """("file", id, None) or ("job", id, artifact name) for a service reference;
    None for anything else (a local path, which only ``silo run`` reads)."""
    if match := re.match(FILE_REFERENCE, value):
        return "file", int(match["file"]), None
    if match := re.match(JOB_REFERENCE, value):
        return "job", int(match["job"]), match["artifact"]
    return None


class ModelSpec(SpecPart):
    name: ModelName = Field(description="A built-in model or an installed plug-in's")
    weights: Annotated[str, Field(min_length=1, max_length=4096)] | None = Field(
        None,
        description="Starting weights (safetensors, or a PyTorch state dict): "
        f"{WEIGHTS_FORMS}; `silo run` also reads a local path",
    )


class DatasetSpec(SpecPart):
    name: DatasetName = "digits"
    root: str | None = Field(
        None, max_length=4096, description="Local folder holding the data (CIFAR, ImageFolder)"
    )
    download: StrictBool = Field(
        False, description="Allow torchvision to download a missing data set"
    )
    val_fraction: Annotated[JsonFloat, Field(gt=0.0, lt=0.5)] = 0.1
    split_seed: Annotated[int, Strictly, Field(ge=0, le=MAX_SEED), Integral] = Field(
        0, description="Seed of the train/val/test split; shared by runs that compare seeds"
    )
    augment: StrictBool | None = Field(
        None, description="Random crop and flip; default per data set"
    )
    options: dict[OptionName, OptionValue] = Field(
        default_factory=dict,
        max_length=16,
        description="Data-set specific integers, e.g. synthetic num_train, image_size",
    )


class PruningSpec(SpecPart):
    method: PruningMethod = "global_magnitude"
    fraction: Fraction = Field(0.2, description="p: fraction of alive weights removed per cycle")
    cycles: Annotated[int, Strictly, Field(ge=1, le=MAX_CYCLES), Integral] | None = Field(
        None, description="T: number of prune-retrain cycles after the dense training"
    )
    target_sparsity: Annotated[JsonFloat, Field(gt=0.0, le=0.9999)] | None = Field(
        None, description="Stop at the first cycle whose sparsity reaches this"
    )
    keep_first_conv_dense: StrictBool = False
    keep_last_linear_dense: StrictBool = False
    retraining: Literal["lr_rewind", "weight_rewind", "fine_tune"] = Field(
        "lr_rewind",
        description=(
            "What each cycle starts from: lr_rewind keeps the trained weights with a fresh "
            "optimizer; weight_rewind resets weights to rewind_epoch of the dense training; "
            "fine_tune keeps weights and optimizer state"
        ),
    )
    rewind_epoch: Annotated[int, Strictly, Field(ge=0, le=1000), Integral] = Field(
        0,
        description="weight_rewind: dense-training epoch to rewind to (0 = initialisation); "
        "at most the dense training's epochs",
    )

    model_config = ConfigDict(
        # What _budget checks, said in the JSON schema too, so that a client (or
        # a fuzzer) reading the schema knows it.
        json_schema_extra={
            "allOf": [
                {
                    "anyOf": [
                        {
                            "required": ["cycles"],
                            "properties": {
                                "cycles": {"type": "integer", "minimum": 1, "maximum": MAX_CYCLES}
                            },
                        },
                        {
                            "required": ["target_sparsity"],
                            "properties": {"target_sparsity": {"type": "number"}},
                        },
                    ]
                },
                {
                    "anyOf": [
                        {"not": {"required": ["rewind_epoch"]}},
                        {"properties": {"rewind_epoch": {"const": 0}}},
                        {
                            "required": ["retraining"],
                            "properties": {"retraining": {"const": "weight_rewind"}},
                        },
                    ]
                },
            ]
        }
    )

    @model_validator(mode="after")
    def _budget(self) -> PruningSpec:
        if self.cycles is None and self.target_sparsity is None:
            raise ValueError("give cycles, target_sparsity, or both")
        if self.rewind_epoch and self.retraining != "weight_rewind":
            raise ValueError("rewind_epoch applies only with retraining: weight_rewind")
        if self.cycles is None and self._cycles_to_target() > MAX_CYCLES:
            raise ValueError(
                f"target_sparsity {self.target_sparsity} takes more than {MAX_CYCLES} cycles "
                f"at fraction {self.fraction}; raise fraction, or give cycles to stop sooner"
            )
        return self

    def _cycles_to_target(self) -> int:
        """The first cycle whose sparsity reaches target_sparsity (MAX_CYCLES + 1 if
        later: a fraction near zero would take millions, or overflow)."""
        assert self.target_sparsity is not None
        needed = math.log1p(-self.target_sparsity) / math.log1p(-self.fraction)
        if not needed <= MAX_CYCLES:  # also catches inf and nan
            return MAX_CYCLES + 1
        cycles = max(1, math.ceil(needed))
        # Guard against float error putting the exact cycle one too late.
        if cycles > 1 and 1 - (1 - self.fraction) ** (cycles - 1) >= self.target_sparsity:
            cycles -= 1
        return cycles

    def planned_cycles(self) -> int:
        """T: the cycles to run, the first reaching target_sparsity if it comes sooner."""
        candidates = [self.cycles] if self.cycles is not None else []
        if self.target_sparsity is not None:
            candidates.append(self._cycles_to_target())
        return min(candidates)


class DenseTrainingSpec(StepDecayShape):
    """Cycle 0. Independent of the retraining schedule so that jobs which differ
    only in their schedule share (and can reuse) the same dense network."""

    epochs: Annotated[int, Strictly, Field(ge=0, le=1000), Integral] | None = Field(
        None,
        description="Default: training.epochs_per_cycle; 0 (with model.weights): cycle 0 "
        "evaluates the given weights without training them",
    )
    max_lr: PositiveLR = 0.1


CompileBackend = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]


class TrainingSpec(SpecPart):
    epochs_per_cycle: Annotated[int, Strictly, Field(ge=1, le=1000), Integral] = 10
    batch_size: Annotated[int, Strictly, Field(ge=1, le=65536), Integral] = 128
    dense: DenseTrainingSpec = DenseTrainingSpec()
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="auto: bf16 autocast on a GPU, fp32 (deterministic) elsewhere"
    )
    compile: StrictBool | CompileBackend = Field(
        False,
        description="torch.compile the model: true (inductor) or a backend name; "
        "a model that does not compile trains eagerly",
    )

    @property
    def dense_epochs(self) -> int:
        return self.epochs_per_cycle if self.dense.epochs is None else self.dense.epochs


class OptimizerSpec(SpecPart):
    name: Literal["sgd", "adamw"] = "sgd"
    momentum: Annotated[JsonFloat, Field(ge=0.0, lt=1.0)] = 0.9
    nesterov: StrictBool = False
    weight_decay: Annotated[JsonFloat, Field(ge=0.0, le=1.0)] = 1e-4


Device = Annotated[str, Field(pattern=r"^(auto|cpu|cuda(:\d+)?|mps)$")]


class JobSpec(SpecPart):
    """Everything that decides what a pruning job computes."""

    model: ModelSpec
    dataset: DatasetSpec = DatasetSpec()
    pruning: PruningSpec
    schedule: ScheduleSpec
    training: TrainingSpec = TrainingSpec()
    optimizer: OptimizerSpec = OptimizerSpec()
    seed: Annotated[int, Strictly, Field(ge=0, le=MAX_SEED), Integral] = 0
    device: Device = Field("auto", description="auto picks cuda when available, else cpu")

    model_config = ConfigDict(
        # What _weights_for_no_dense_training checks, said in the JSON schema too.
        json_schema_extra={
            "anyOf": [
                {"required": ["model"], "properties": {"model": {"required": ["weights"]}}},
                {
                    "properties": {
                        "training": {
                            "properties": {"dense": {"properties": {"epochs": {"minimum": 1}}}}
                        }
                    }
                },
            ]
        }
    )

    @model_validator(mode="after")
    def _weights_for_no_dense_training(self) -> JobSpec:
        if self.training.dense.epochs == 0 and self.model.weights is None:
            raise ValueError(
                "training.dense.epochs: 0 means no dense training, which needs starting "
                "weights: set model.weights, or give 1 or more epochs"
            )
        return self

    @model_validator(mode="after")
    def _rewind_inside_dense(self) -> JobSpec:
        epoch = self.pruning.rewind_epoch
        if epoch > self.training.dense_epochs:
            raise ValueError(
                f"pruning.rewind_epoch ({epoch}) must be <= the dense training's epochs "
                f"({self.training.dense_epochs})"
            )
        return self

    def identity(self) -> str:
        """Hash of the settings that differ from the defaults.

        Two specs that compute the same thing hash the same, however they were
        written (key order, defaults spelled out or left out).
        """
        payload = self.model_dump(mode="json", exclude_defaults=True)
        return _hash(payload)

    def dense_identity(self) -> str:
        """Hash of what decides the dense training (cycle 0) and what it leaves behind.

        Jobs that differ only in how they prune and retrain afterwards (their
        schedule, the fraction, the number of cycles) hash the same, so one
        dense training can serve them all. ``model`` includes its starting
        weights' reference, so jobs from different weights never share.
        """
        payload = self.model_dump(
            mode="json",
            include={"model", "dataset", "optimizer", "seed", "device"},
            exclude_defaults=True,
        )
        payload["dense"] = self.training.dense.model_dump(mode="json")
        payload["dense_epochs"] = self.training.dense_epochs
        payload["batch_size"] = self.training.batch_size
        # A weight-rewinding job keeps a copy of the weights from inside the dense run.
        payload["retraining"] = self.pruning.retraining
        payload["rewind_epoch"] = self.pruning.rewind_epoch
        return _hash(payload)


def _hash(payload: dict[str, Any]) -> str:
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
