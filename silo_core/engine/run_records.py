"""What a run tells its caller: how it began, and what it ended with."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from silo_contract.reports import CycleResult
from silo_core.data import DatasetInfo


@dataclass(frozen=True)
class RunStart:
    """Where a run began, decided when it begins: its own checkpoint, another job's
    dense training (the dense cache), or nothing (it trains cycle 0 itself)."""

    source: Literal["checkpoint", "shared dense", "scratch"]
    dense_identity: str
    cycle: int = 0  # checkpoint: the cycle it resumes in
    epochs_done: int = 0  # checkpoint: epochs of that cycle already trained
    epochs: int = 0  # checkpoint: epochs of that cycle

    def __str__(self) -> str:
        if self.source == "checkpoint":
            return (
                f"resumes its own checkpoint: cycle {self.cycle}, "
                f"{self.epochs_done} of {self.epochs} epochs done"
            )
        if self.source == "shared dense":
            return (
                f"starts from the shared dense training {self.dense_identity}: "
                "cycle 0 is not trained again"
            )
        return f"trains the dense network (cycle 0) itself ({self.dense_identity})"


@dataclass
class JobResult:
    cycles: list[CycleResult]
    model_state: dict[str, torch.Tensor]
    masks: dict[str, torch.Tensor]
    stopped: bool
    identity: str
    info: DatasetInfo  # the input shape and classes the model was built for
