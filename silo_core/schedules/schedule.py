"""A schedule: which peak each cycle gets, and how the LR moves inside the cycle."""

from __future__ import annotations

from dataclasses import dataclass

from silo_core.schedules.max_lr import ConstantMaxLR, MaxLRRule, SiloMaxLR
from silo_core.schedules.shapes import (
    ConstantShape,
    OneCycleShape,
    Shape,
    WarmupStepDecay,
)


@dataclass(frozen=True)
class Schedule:
    """Learning rate for step ``i`` of ``n`` in retraining cycle ``t``."""

    name: str
    rule: MaxLRRule
    shape: Shape

    def max_lr(self, cycle: int) -> float:
        return self.rule.max_lr(cycle)

    def lr(self, cycle: int, step: int, total_steps: int) -> float:
        return self.max_lr(cycle) * self.shape.factor(step, total_steps)

    def curve(self, cycle: int, total_steps: int) -> list[float]:
        """Every step's LR in one cycle (for plots and tests)."""
        peak = self.max_lr(cycle)
        return [peak * self.shape.factor(i, total_steps) for i in range(total_steps)]


# The authors' published SILO settings (CIFAR-10, p = 0.2).
SILO_PRESETS: dict[str, dict[str, float | int]] = {
    "resnet20": {"alpha": 0.04, "offset": 0.03, "beta": 5.0, "delay": 1},
    "vgg19": {"alpha": 0.06, "offset": 0.04, "beta": 5.0, "delay": 1},
}

# The authors' shape inside a SILO cycle: linear warm-up, then /10 and /100.
SILO_SHAPE = WarmupStepDecay(warmup_fraction=0.1, milestones=(0.5, 0.75), gamma=0.1)
# Le & Hua (2021): short warm-up, then step decay at 45% and 67.5% of the cycle.
SLR_SHAPE = WarmupStepDecay(warmup_fraction=0.05, milestones=(0.45, 0.675), gamma=0.1)
# Le & Hua (2021): one cycle with torch's OneCycleLR settings.
CLR_SHAPE = OneCycleShape(pct_start=0.1, div_factor=100.0, final_div_factor=100.0)


def silo(
    *,
    alpha: float,
    offset: float,
    beta: float = 5.0,
    delay: int = 1,
    prune_fraction: float = 0.2,
    shape: Shape = SILO_SHAPE,
) -> Schedule:
    rule = SiloMaxLR(
        alpha=alpha, offset=offset, beta=beta, delay=delay, prune_fraction=prune_fraction
    )
    return Schedule("silo", rule, shape)


def silo_preset(preset: str, *, prune_fraction: float = 0.2) -> Schedule:
    if preset not in SILO_PRESETS:
        raise ValueError(f"unknown SILO preset {preset!r}; allowed: {', '.join(SILO_PRESETS)}")
    p = SILO_PRESETS[preset]
    return silo(
        alpha=float(p["alpha"]),
        offset=float(p["offset"]),
        beta=float(p["beta"]),
        delay=int(p["delay"]),
        prune_fraction=prune_fraction,
    )


def lr_rewind(*, max_lr: float, shape: Shape) -> Schedule:
    """Renda et al. (2020): replay the original training schedule every cycle."""
    return Schedule("lr_rewind", ConstantMaxLR(max_lr), shape)


def fine_tune(*, max_lr: float = 1e-3) -> Schedule:
    return Schedule("fine_tune", ConstantMaxLR(max_lr), ConstantShape())


def slr(*, max_lr: float, shape: Shape = SLR_SHAPE) -> Schedule:
    return Schedule("slr", ConstantMaxLR(max_lr), shape)


def clr(*, max_lr: float, shape: Shape = CLR_SHAPE) -> Schedule:
    return Schedule("clr", ConstantMaxLR(max_lr), shape)


def constant(*, max_lr: float) -> Schedule:
    return Schedule("constant", ConstantMaxLR(max_lr), ConstantShape())
