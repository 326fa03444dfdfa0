"""The retraining schedules a JobSpec may name, one model each, told apart by ``name``."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from silo_contract.fields import Integral, JsonFloat, Strictly
from silo_core.schedules import SILO_PRESETS
from silo_core.spec.common import Fraction, Milestones, PositiveLR, SpecPart, StepDecayShape


class SiloScheduleSpec(StepDecayShape):
    """SILO: max_lr = offset + alpha * S(x_t); unset fields come from ``preset``."""

    name: Literal["silo"]
    # A Literal of the presets' names, built from SILO_PRESETS at import: pydantic
    # reads it at run time; a type checker cannot.
    preset: Literal[tuple(SILO_PRESETS)] = "resnet20"  # type: ignore[valid-type]
    alpha: Annotated[JsonFloat, Field(ge=0.0, le=10.0)] | None = None
    offset: PositiveLR | None = None
    beta: Annotated[JsonFloat, Field(gt=0.0, le=100.0)] | None = None
    delay: Annotated[int, Strictly, Field(ge=0, le=100), Integral] | None = None

    def resolved(self) -> dict[str, float]:
        """alpha, offset, beta, delay with the preset filling what is unset."""
        base = SILO_PRESETS[self.preset]
        return {
            key: (getattr(self, key) if getattr(self, key) is not None else base[key])
            for key in ("alpha", "offset", "beta", "delay")
        }


class LRRewindScheduleSpec(SpecPart):
    """Renda et al. 2020: replay the dense training's schedule in every cycle."""

    name: Literal["lr_rewind"]
    max_lr: PositiveLR | None = Field(None, description="Default: the dense training's max_lr")


class FineTuneScheduleSpec(SpecPart):
    name: Literal["fine_tune"]
    max_lr: PositiveLR = 1e-3


class SLRScheduleSpec(StepDecayShape):
    """Le & Hua 2021, scaled learning-rate restarting."""

    name: Literal["slr"]
    max_lr: PositiveLR | None = Field(None, description="Default: the dense training's max_lr")
    warmup_fraction: Annotated[JsonFloat, Field(ge=0.0, lt=1.0)] = 0.05
    milestones: Milestones = (0.45, 0.675)


class CLRScheduleSpec(SpecPart):
    """Le & Hua 2021, cyclic learning-rate restarting (one cycle per retraining)."""

    name: Literal["clr"]
    max_lr: PositiveLR | None = Field(None, description="Default: the dense training's max_lr")
    pct_start: Fraction = 0.1
    div_factor: Annotated[JsonFloat, Field(gt=0.0)] = 100.0
    final_div_factor: Annotated[JsonFloat, Field(gt=0.0)] = 100.0


class ConstantScheduleSpec(SpecPart):
    name: Literal["constant"]
    max_lr: PositiveLR


# A log grid around the range SILO's presets move in (0.03 to 0.1 and beyond).
ORACLE_DEFAULT_GRID = (0.003, 0.0065, 0.014, 0.03, 0.065, 0.14, 0.3)


class OracleScheduleSpec(StepDecayShape):
    """The Oracle: every cycle is retrained once per max_lr of ``grid`` and the
    retraining with the best validation accuracy is kept (SILO's comparison)."""

    name: Literal["oracle"]
    grid: Annotated[
        list[PositiveLR],
        Field(min_length=1, max_length=32, json_schema_extra={"uniqueItems": True}),
    ] = Field(
        default_factory=lambda: list(ORACLE_DEFAULT_GRID),
        description="The max_lr values tried in every cycle",
    )

    @model_validator(mode="after")
    def _distinct(self) -> OracleScheduleSpec:
        if len(set(self.grid)) != len(self.grid):
            raise ValueError(f"grid: values must be distinct, got {self.grid}")
        return self


ScheduleSpec = Annotated[
    SiloScheduleSpec
    | LRRewindScheduleSpec
    | FineTuneScheduleSpec
    | SLRScheduleSpec
    | CLRScheduleSpec
    | ConstantScheduleSpec
    | OracleScheduleSpec,
    Field(discriminator="name"),
]
