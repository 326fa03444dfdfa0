"""What the parts of a JobSpec are built from: a frozen model that refuses
unknown keys, and the numbers and learning-rate shape several parts share."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

from silo_contract.fields import JsonFloat


class SpecPart(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Fraction = Annotated[JsonFloat, Field(gt=0.0, lt=1.0)]
PositiveLR = Annotated[JsonFloat, Field(gt=0.0, le=10.0)]
Milestones = Annotated[tuple[Fraction, ...], Field(max_length=8)]


# Warm up, then multiply the LR by gamma at each milestone. (A comment, not a
# docstring: pydantic would put a docstring into the JSON schema.)
class StepDecayShape(SpecPart):
    warmup_fraction: Annotated[JsonFloat, Field(ge=0.0, lt=1.0)] = 0.1
    milestones: Milestones = Field(
        (0.5, 0.75), description="Fractions of the cycle where the LR is multiplied by gamma"
    )
    gamma: Annotated[JsonFloat, Field(gt=0.0, le=1.0)] = 0.1

    @field_validator("milestones")
    @classmethod
    def _in_order(cls, milestones: tuple[float, ...]) -> tuple[float, ...]:
        # Each milestone decays the LR once, whatever order they are written in
        # (as torch's MultiStepLR reads them); kept sorted, so equal specs hash alike.
        return tuple(sorted(milestones))
