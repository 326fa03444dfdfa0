"""Shapes of the learning rate inside one retraining cycle.

A shape maps (step i of n) to a multiplier of the cycle's peak learning rate
``max_lr``. Keeping the peak out of the shape is what lets every schedule in the
paper share one machinery: SILO and the baselines differ only in how they pick
``max_lr`` per cycle and which shape they replay inside it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol


class Shape(Protocol):
    """Multiplier of ``max_lr`` at step ``step`` (0-based) of ``total_steps``."""

    def factor(self, step: int, total_steps: int) -> float: ...


def _check_step(step: int, total_steps: int) -> None:
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    if not 0 <= step < total_steps:
        raise ValueError(f"step must be in [0, {total_steps}), got {step}")


@dataclass(frozen=True)
class ConstantShape:
    """The peak for the whole cycle (fine-tuning)."""

    def factor(self, step: int, total_steps: int) -> float:
        _check_step(step, total_steps)
        return 1.0


@dataclass(frozen=True)
class WarmupStepDecay:
    """Linear warm-up to the peak, then division by ``1/gamma`` at each milestone.

    ``warmup_fraction`` and ``milestones`` are fractions of the cycle, so one
    shape serves every cycle length. Warm-up step ``i`` uses ``(i + 1) / w`` so the
    first step already trains and the last warm-up step reaches the peak.
    """

    warmup_fraction: float = 0.1
    milestones: tuple[float, ...] = (0.5, 0.75)
    gamma: float = 0.1

    def __post_init__(self) -> None:
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ValueError(f"warmup_fraction must be in [0, 1), got {self.warmup_fraction}")
        if any(not 0.0 < m < 1.0 for m in self.milestones):
            raise ValueError(f"milestones must lie in (0, 1), got {list(self.milestones)}")
        if list(self.milestones) != sorted(self.milestones):
            raise ValueError(f"milestones must be increasing, got {list(self.milestones)}")
        if not 0.0 < self.gamma <= 1.0:
            raise ValueError(f"gamma must be in (0, 1], got {self.gamma}")

    def factor(self, step: int, total_steps: int) -> float:
        _check_step(step, total_steps)
        warmup_steps = int(self.warmup_fraction * total_steps)
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = step / total_steps
        passed = sum(1 for m in self.milestones if progress >= m)
        return self.gamma**passed


@dataclass(frozen=True)
class OneCycleShape:
    """torch's ``OneCycleLR`` (two phases, cosine annealing), as a multiplier.

    Reimplemented rather than driving ``torch.optim.lr_scheduler.OneCycleLR``
    because that class needs an optimizer and mutates it; the formula here is
    the same one (tests compare the two step by step).
    """

    pct_start: float = 0.1
    div_factor: float = 100.0
    final_div_factor: float = 100.0

    def __post_init__(self) -> None:
        if not 0.0 < self.pct_start < 1.0:
            raise ValueError(f"pct_start must be in (0, 1), got {self.pct_start}")
        if self.div_factor <= 0 or self.final_div_factor <= 0:
            raise ValueError("div_factor and final_div_factor must be > 0")

    def factor(self, step: int, total_steps: int) -> float:
        _check_step(step, total_steps)
        initial = 1.0 / self.div_factor
        minimum = initial / self.final_div_factor
        up_end = float(self.pct_start * total_steps) - 1
        down_end = float(total_steps - 1)
        if step <= up_end:
            start, end, pct = initial, 1.0, step / up_end if up_end > 0 else 1.0
        else:
            span = down_end - up_end
            start, end, pct = 1.0, minimum, (step - up_end) / span if span > 0 else 1.0
        return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)


@dataclass(frozen=True)
class CosineShape:
    """Optional linear warm-up, then cosine decay from the peak to zero."""

    warmup_fraction: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ValueError(f"warmup_fraction must be in [0, 1), got {self.warmup_fraction}")

    def factor(self, step: int, total_steps: int) -> float:
        _check_step(step, total_steps)
        warmup_steps = int(self.warmup_fraction * total_steps)
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        span = total_steps - warmup_steps
        return 0.5 * (1.0 + math.cos(math.pi * (step - warmup_steps) / span))
