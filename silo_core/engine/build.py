"""Turning a JobSpec into the objects the engine runs."""

from __future__ import annotations

import torch
from torch import nn

from silo_core import schedules
from silo_core.schedules import ConstantMaxLR, Schedule, WarmupStepDecay
from silo_core.spec import (
    CLRScheduleSpec,
    ConstantScheduleSpec,
    FineTuneScheduleSpec,
    JobSpec,
    LRRewindScheduleSpec,
    OptimizerSpec,
    OracleScheduleSpec,
    SiloScheduleSpec,
    SLRScheduleSpec,
)


def resolve_device(name: str) -> torch.device:
    """``auto`` means the first GPU when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} was asked for, but CUDA is not available here")
    return device


def dense_schedule(spec: JobSpec) -> Schedule:
    dense = spec.training.dense
    shape = WarmupStepDecay(dense.warmup_fraction, tuple(dense.milestones), dense.gamma)
    return Schedule("dense", ConstantMaxLR(dense.max_lr), shape)


def retraining_schedule(spec: JobSpec) -> Schedule:
    """The schedule of cycles 1..T."""
    s = spec.schedule
    dense = dense_schedule(spec)
    dense_peak = spec.training.dense.max_lr
    match s:
        case SiloScheduleSpec():
            params = s.resolved()
            return schedules.silo(
                alpha=float(params["alpha"]),
                offset=float(params["offset"]),
                beta=float(params["beta"]),
                delay=int(params["delay"]),
                prune_fraction=spec.pruning.fraction,
                shape=WarmupStepDecay(s.warmup_fraction, tuple(s.milestones), s.gamma),
            )
        case LRRewindScheduleSpec():
            return schedules.lr_rewind(max_lr=s.max_lr or dense_peak, shape=dense.shape)
        case FineTuneScheduleSpec():
            return schedules.fine_tune(max_lr=s.max_lr)
        case SLRScheduleSpec():
            step_decay = WarmupStepDecay(s.warmup_fraction, tuple(s.milestones), s.gamma)
            return schedules.slr(max_lr=s.max_lr or dense_peak, shape=step_decay)
        case CLRScheduleSpec():
            one_cycle = schedules.OneCycleShape(s.pct_start, s.div_factor, s.final_div_factor)
            return schedules.clr(max_lr=s.max_lr or dense_peak, shape=one_cycle)
        case ConstantScheduleSpec():
            return schedules.constant(max_lr=s.max_lr)
        case OracleScheduleSpec():
            # The Oracle's peak is chosen per cycle (oracle_trial_schedule); this
            # placeholder only names the shape, with the grid's first value.
            return oracle_trial_schedule(s, s.grid[0])
    raise TypeError(f"no schedule builder for {type(s).__name__}")


def oracle_trial_schedule(oracle: OracleScheduleSpec, max_lr: float) -> Schedule:
    """One Oracle trial: a constant peak ``max_lr`` with the Oracle's shape."""
    shape = WarmupStepDecay(oracle.warmup_fraction, tuple(oracle.milestones), oracle.gamma)
    return Schedule("oracle", ConstantMaxLR(max_lr), shape)


def build_optimizer(spec: OptimizerSpec, model: nn.Module) -> torch.optim.Optimizer:
    # The LR is set before every step by the engine; 0.0 here is a placeholder.
    if spec.name == "sgd":
        return torch.optim.SGD(
            model.parameters(),
            lr=0.0,
            momentum=spec.momentum,
            nesterov=spec.nesterov and spec.momentum > 0,
            weight_decay=spec.weight_decay,
        )
    return torch.optim.AdamW(model.parameters(), lr=0.0, weight_decay=spec.weight_decay)
