"""A running job's checkpoint: what it holds, and where it is kept.

The engine takes a checkpoint after every epoch (and on both sides of an
Oracle cycle), and the job's next attempt resumes from it. In memory it is a
typed record; on disk it is a plain dict of numbers, lists and tensors, which
``torch.load(weights_only=True)`` reads without unpickling any class of ours.
The dict's keys are the checkpoint format: a checkpoint written by an earlier
attempt, by earlier code of the same CHECKPOINT_VERSION, must still load.

A store holds one latest state per job and writes it atomically (temporary
file, then rename), so a process killed mid-write leaves the previous
checkpoint intact. Finished cycles are also kept in their own folders, as each
level of an iterative pruning run is worth keeping on its own.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from silo_contract.reports import CycleResult
from silo_core.records import EpochScores

CHECKPOINT_VERSION = 1


class CheckpointMismatchError(RuntimeError):
    """The checkpoint found was written by another spec, or in another format."""


@dataclass(frozen=True)
class RandomState:
    """torch's random generators: the CPU's, and every GPU's where CUDA is."""

    cpu: torch.Tensor
    cuda: tuple[torch.Tensor, ...] | None = None

    @classmethod
    def capture(cls) -> RandomState:
        cuda = tuple(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else None
        return cls(torch.get_rng_state(), cuda)

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        # A checkpoint written beside a GPU may resume on a machine without one.
        if self.cuda is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(self.cuda)

    def encode(self) -> dict[str, Any]:
        saved: dict[str, Any] = {"torch": self.cpu}
        if self.cuda is not None:
            saved["cuda"] = list(self.cuda)
        return saved

    @classmethod
    def decode(cls, saved: Mapping[str, Any]) -> RandomState:
        cuda = saved.get("cuda")
        return cls(saved["torch"], None if cuda is None else tuple(cuda))


@dataclass(frozen=True)
class CheckpointState:
    """Everything a job needs to go on exactly where it stood: how far it is
    (cycle, epochs done, the cycle's scores so far, the finished cycles, the
    Oracle's choices) and what it trains (weights, masks, optimizer state, the
    weight-rewinding point, random state).

    The tensors are the engine's own, not copies: a state is written as soon
    as it is taken."""

    identity: str  # the spec's identity (a shared dense training: its dense identity)
    cycle: int
    epochs_done: int  # of ``cycle``
    cycle_seconds: float  # spent on ``cycle`` so far
    epochs: tuple[EpochScores, ...]  # ``cycle``'s epochs so far
    results: tuple[CycleResult, ...]  # the finished cycles
    oracle_choice: Mapping[int, float]  # cycle -> the max_lr the Oracle chose
    model: dict[str, torch.Tensor]
    masks: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    rewind: dict[str, torch.Tensor] | None  # weight rewinding's dense-training weights
    rng: RandomState

    def encode(self) -> dict[str, Any]:
        """The checkpoint as it is written to disk."""
        return {
            "version": CHECKPOINT_VERSION,
            "identity": self.identity,
            "cycle": self.cycle,
            "epochs_done": self.epochs_done,
            "cycle_seconds": self.cycle_seconds,
            "epochs": [asdict(scores) for scores in self.epochs],
            "results": [result.to_dict() for result in self.results],
            "oracle_choice": dict(self.oracle_choice),
            "model": self.model,
            "masks": self.masks,
            "optimizer": self.optimizer,
            "rewind": self.rewind,
            "rng": self.rng.encode(),
        }

    @classmethod
    def decode(cls, saved: Mapping[str, Any]) -> CheckpointState:
        """A checkpoint read from disk; refused if written in another format."""
        if saved.get("version") != CHECKPOINT_VERSION:
            raise CheckpointMismatchError(
                f"checkpoint format {saved.get('version')} is not {CHECKPOINT_VERSION}"
            )
        return cls(
            identity=saved["identity"],
            cycle=saved["cycle"],
            epochs_done=saved["epochs_done"],
            cycle_seconds=saved["cycle_seconds"],
            epochs=tuple(EpochScores(**scores) for scores in saved["epochs"]),
            results=tuple(CycleResult.from_dict(result) for result in saved["results"]),
            # Checkpoints written before the Oracle existed have no choices.
            oracle_choice=dict(saved.get("oracle_choice") or {}),
            model=saved["model"],
            masks=saved["masks"],
            optimizer=saved["optimizer"],
            rewind=saved["rewind"],
            rng=RandomState.decode(saved["rng"]),
        )

    def check_identity(self, expected: str) -> None:
        """Refuse a checkpoint another spec wrote: resuming it would mix two jobs."""
        if self.identity != expected:
            raise CheckpointMismatchError(
                f"checkpoint belongs to spec {self.identity}, not {expected}"
            )


class CheckpointStore(Protocol):
    """Where one job keeps its latest checkpoint and its finished cycles."""

    def save(self, state: CheckpointState) -> None: ...
    def load(self) -> CheckpointState | None: ...
    def save_cycle(
        self, cycle: int, model: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]
    ) -> None: ...


class NullCheckpointStore:
    """The store of a job that keeps nothing: it starts afresh every time."""

    def save(self, state: CheckpointState) -> None:
        pass

    def load(self) -> CheckpointState | None:
        return None

    def save_cycle(
        self, cycle: int, model: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]
    ) -> None:
        pass


def atomic_torch_save(obj: object, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_own_file(path: Path) -> Any:
    # Our own files only; they hold optimizer state and RNG tensors, which
    # weights_only=True loads as well.
    return torch.load(path, map_location="cpu", weights_only=True)


class LocalCheckpointStore:
    """Checkpoints in a folder: ``latest.pt`` and ``cycle_<t>/model.pt``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @property
    def latest_path(self) -> Path:
        return self.root / "latest.pt"

    def save(self, state: CheckpointState) -> None:
        atomic_torch_save(state.encode(), self.latest_path)

    def load(self) -> CheckpointState | None:
        if not self.latest_path.exists():
            return None
        return CheckpointState.decode(load_own_file(self.latest_path))

    def save_cycle(
        self, cycle: int, model: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]
    ) -> None:
        state = {"model": model, "masks": masks}
        atomic_torch_save(state, self.root / f"cycle_{cycle:03d}" / "model.pt")
