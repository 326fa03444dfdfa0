"""Per-cycle peak learning rate rules: SILO's S-curve and the constant baselines."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class MaxLRRule(Protocol):
    """Peak learning rate of retraining cycle ``cycle`` (0 is the dense training)."""

    def max_lr(self, cycle: int) -> float: ...


def s_curve(x: float, beta: float) -> float:
    """``x**beta / (x**beta + (1 - x)**beta)``: 0 at 0, 1/2 at 1/2, 1 at 1."""
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"x must be in [0, 1], got {x}")
    # float ** float may be complex (a negative base); with x in [0, 1] both are real.
    num: float = x**beta
    rest: float = (1.0 - x) ** beta
    return num / (num + rest)


@dataclass(frozen=True)
class SiloMaxLR:
    """SILO (Liu, Ghosh, Tan, Motani, TMLR 2023).

    ``x_t = 1 - (1 - p)**max(0, t - delay)`` is the sparsity reached ``delay``
    cycles earlier and ``max_lr = offset + alpha * S(x_t)``. The peak therefore
    rises along an S-curve as the network gets sparser.
    """

    alpha: float
    offset: float
    beta: float = 5.0
    delay: int = 1
    prune_fraction: float = 0.2

    def __post_init__(self) -> None:
        if self.alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {self.alpha}")
        if self.offset <= 0:
            raise ValueError(f"offset must be > 0, got {self.offset}")
        if self.beta <= 0:
            raise ValueError(f"beta must be > 0, got {self.beta}")
        if self.delay < 0:
            raise ValueError(f"delay must be >= 0, got {self.delay}")
        if not 0.0 < self.prune_fraction < 1.0:
            raise ValueError(f"prune_fraction p must be in (0, 1), got {self.prune_fraction}")

    def sparsity_signal(self, cycle: int) -> float:
        """``x_t``: the sparsity reached ``delay`` cycles before ``cycle``."""
        if cycle < 0:
            raise ValueError(f"cycle must be >= 0, got {cycle}")
        return 1.0 - (1.0 - self.prune_fraction) ** max(0, cycle - self.delay)

    def max_lr(self, cycle: int) -> float:
        return self.offset + self.alpha * s_curve(self.sparsity_signal(cycle), self.beta)


@dataclass(frozen=True)
class ConstantMaxLR:
    """The same peak in every cycle (LR rewinding, SLR, CLR, fine-tuning)."""

    value: float

    def __post_init__(self) -> None:
        if self.value <= 0:
            raise ValueError(f"max_lr must be > 0, got {self.value}")

    def max_lr(self, cycle: int) -> float:
        if cycle < 0:
            raise ValueError(f"cycle must be >= 0, got {cycle}")
        return self.value
