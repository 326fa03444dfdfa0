"""One dense training (cycle 0) for every job that differs only after it.

Jobs with the same JobSpec.dense_identity() (a study's schedules, for one
seed) train the same dense network. The first to finish cycle 0 offers it to
a dense cache: its checkpoint right after cycle 0, and the events of its dense
epochs. A later job starts from there, reports those events as its own, and
never trains cycle 0 again; its result is the same as if it had.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from silo_contract.layout import dense_file_name
from silo_contract.reports import EpochEvent
from silo_core.engine.checkpoint import CheckpointState, atomic_torch_save, load_own_file


@dataclass(frozen=True)
class SharedDense:
    """A finished dense training as a cache keeps it: the checkpoint after cycle 0,
    under the dense identity, and the events of the epochs that trained it."""

    checkpoint: CheckpointState
    events: tuple[EpochEvent, ...]

    def events_for(self, cycles: int) -> list[EpochEvent]:
        """The dense epochs as a job planning ``cycles`` cycles reports them."""
        return [event.model_copy(update={"cycles": cycles}) for event in self.events]

    def encode(self) -> dict[str, Any]:
        """A checkpoint with one key more: ``events``."""
        return {**self.checkpoint.encode(), "events": [event.to_dict() for event in self.events]}

    @classmethod
    def decode(cls, saved: Mapping[str, Any]) -> SharedDense:
        checkpoint = {key: value for key, value in saved.items() if key != "events"}
        events = tuple(EpochEvent(**event) for event in saved["events"])
        return cls(CheckpointState.decode(checkpoint), events)


class DenseCache(Protocol):
    """Finished dense trainings (cycle 0), by JobSpec.dense_identity()."""

    def holds(self, identity: str) -> bool: ...
    def load(self, identity: str) -> SharedDense | None: ...
    def save(self, identity: str, dense: SharedDense) -> None: ...


class NullDenseCache:
    """No cache: every job trains its own dense network, and shares it with none."""

    # DenseCache's signatures; whatever the identity, nothing is held.
    def holds(self, identity: str) -> bool:  # noqa: ARG002
        return False

    def load(self, identity: str) -> SharedDense | None:  # noqa: ARG002
        return None

    def save(self, identity: str, dense: SharedDense) -> None:
        pass


class LocalDenseCache:
    """Dense trainings as ``<root>/<dense identity>.pt``, shared by the jobs that
    differ only after cycle 0 (a study's schedules, for one seed)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, identity: str) -> Path:
        return self.root / dense_file_name(identity)

    def holds(self, identity: str) -> bool:
        return self.path(identity).exists()

    def load(self, identity: str) -> SharedDense | None:
        path = self.path(identity)
        if not path.exists():
            return None
        return SharedDense.decode(load_own_file(path))

    def save(self, identity: str, dense: SharedDense) -> None:
        atomic_torch_save(dense.encode(), self.path(identity))


class DenseSharing:
    """One job's side of the cache: the dense training it may start from, and the
    one it offers once it has trained its own."""

    def __init__(self, cache: DenseCache, identity: str) -> None:
        self.cache = cache
        self.identity = identity  # the job's JobSpec.dense_identity()
        # The dense epochs this run trained; None once it resumed its own
        # checkpoint, as the earlier attempt's epochs are not here to offer.
        self._events: list[EpochEvent] | None = []

    def find(self) -> SharedDense | None:
        return self.cache.load(self.identity)

    def resumed(self) -> None:
        """The run goes on from its own checkpoint: it has no whole cycle 0 to offer."""
        self._events = None

    def record(self, event: EpochEvent) -> None:
        """A dense epoch this run trained."""
        if self._events is not None:
            self._events.append(event)

    def offer(self, checkpoint: CheckpointState) -> None:
        """Offer the finished dense training (``checkpoint``: the job's, right after
        cycle 0) to later jobs, unless another job's is there already."""
        if self._events is None or self.cache.holds(self.identity):
            return
        shared = replace(checkpoint, identity=self.identity)
        self.cache.save(self.identity, SharedDense(shared, tuple(self._events)))
