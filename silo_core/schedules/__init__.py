"""Learning-rate schedules for iterative pruning: SILO and its baselines."""

from silo_core.schedules.max_lr import ConstantMaxLR, MaxLRRule, SiloMaxLR, s_curve
from silo_core.schedules.schedule import (
    CLR_SHAPE,
    SILO_PRESETS,
    SILO_SHAPE,
    SLR_SHAPE,
    Schedule,
    clr,
    constant,
    fine_tune,
    lr_rewind,
    silo,
    silo_preset,
    slr,
)
from silo_core.schedules.shapes import (
    ConstantShape,
    CosineShape,
    OneCycleShape,
    Shape,
    WarmupStepDecay,
)

__all__ = [
    "CLR_SHAPE",
    "SILO_PRESETS",
    "SILO_SHAPE",
    "SLR_SHAPE",
    "ConstantMaxLR",
    "ConstantShape",
    "CosineShape",
    "MaxLRRule",
    "OneCycleShape",
    "Schedule",
    "Shape",
    "SiloMaxLR",
    "WarmupStepDecay",
    "clr",
    "constant",
    "fine_tune",
    "lr_rewind",
    "s_curve",
    "silo",
    "silo_preset",
    "slr",
]
