"""Where a running job keeps its last checkpoint.

A store holds one latest state per job and writes it atomically (temporary
file, then rename), so a process killed mid-write leaves the previous
checkpoint intact. Finished cycles are also kept in their own folders, as each
level of an iterative pruning run is worth keeping on its own.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Protocol

import torch


class CheckpointStore(Protocol):
    def save(self, state: dict[str, Any]) -> None: ...
    def load(self) -> dict[str, Any] | None: ...
    def save_cycle(self, cycle: int, state: dict[str, Any]) -> None: ...


def atomic_torch_save(obj: Any, path: Path) -> None:
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


class LocalCheckpointStore:
    """Checkpoints in a folder: ``latest.pt`` and ``cycle_<t>/model.pt``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @property
    def latest_path(self) -> Path:
        return self.root / "latest.pt"

    def save(self, state: dict[str, Any]) -> None:
        atomic_torch_save(state, self.latest_path)

    def load(self) -> dict[str, Any] | None:
        if not self.latest_path.exists():
            return None
        # Our own files only; they hold optimizer state and RNG tensors, which
        # weights_only=True loads as well.
        return torch.load(self.latest_path, map_location="cpu", weights_only=True)

    def save_cycle(self, cycle: int, state: dict[str, Any]) -> None:
        atomic_torch_save(state, self.root / f"cycle_{cycle:03d}" / "model.pt")


class DenseCache(Protocol):
    """Finished dense trainings (cycle 0), by JobSpec.dense_identity()."""

    def load(self, identity: str) -> dict[str, Any] | None: ...
    def save(self, identity: str, state: dict[str, Any]) -> None: ...


class LocalDenseCache:
    """Dense trainings as ``<root>/<dense identity>.pt``, shared by the jobs that
    differ only after cycle 0 (a study's schedules, for one seed)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, identity: str) -> Path:
        return self.root / f"{identity}.pt"

    def load(self, identity: str) -> dict[str, Any] | None:
        path = self.path(identity)
        if not path.exists():
            return None
        return torch.load(path, map_location="cpu", weights_only=True)

    def save(self, identity: str, state: dict[str, Any]) -> None:
        atomic_torch_save(state, self.path(identity))
