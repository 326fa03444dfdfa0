"""The Oracle's per-cycle search, separated from where its trials run.

An Oracle cycle retrains the freshly pruned network once per max_lr of the
grid, every trial from the same start (weights, masks, random state), and
keeps the trial with the best validation accuracy. The engine hands the start
to an ``OracleSearch``: ``search_in_process`` runs the trials one after the
other in the engine's own process; ``workers.oracle_tune`` runs them as
parallel Ray Tune trials. Either trains a trial with a ``TrialRoutine``
(silo_core.engine.trial), so a trial trains the same way wherever it runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from silo_contract.reports import EpochEvent
from silo_core.records import EpochScores
from silo_core.spec import JobSpec


@dataclass(frozen=True)
class TrialStart:
    """Where every trial of one Oracle cycle starts: the pruned network (CPU
    tensors) and the random state, right after pruning."""

    spec: JobSpec
    cycle: int
    model: dict[str, torch.Tensor]
    masks: dict[str, torch.Tensor]
    rng: torch.Tensor


@dataclass
class TrialOutcome:
    """One trial's retraining: its epochs and the weights it ended with."""

    max_lr: float
    events: list[EpochEvent]
    scores: list[EpochScores]
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]

    @property
    def val_accuracy(self) -> float:
        """What the Oracle ranks trials by: the best validation accuracy of any epoch."""
        return max(s.val_accuracy for s in self.scores)


# What hears each epoch of a trial as it finishes.
TrialEpochCallback = Callable[[EpochEvent, EpochScores], None]


class TrialRoutine(Protocol):
    """Trains one trial: cycle ``start.cycle`` retrained from ``start`` with a
    constant peak ``max_lr``; ``on_epoch`` hears each of its epochs."""

    def __call__(
        self, start: TrialStart, max_lr: float, on_epoch: TrialEpochCallback | None = None
    ) -> TrialOutcome: ...


@dataclass
class SearchResult:
    best: TrialOutcome
    val_accuracy: list[float]  # per grid value, in grid order


class SearchProgress:
    """How far one cycle's search has come, for the job's progress note.

    A search trains grid x epochs epochs before the cycle's first event is
    reported, minutes to hours on a real network, so without this note the
    job's progress would stand still. Trials may finish epochs in any order
    (they run side by side on Tune); each finished epoch updates the note:
    ``Oracle search: 37/150 trial epochs, best so far max_lr 0.1 (94.2% val)``.
    """

    def __init__(self, grid: Sequence[float], epochs: int, notify: Callable[[str], None]) -> None:
        self.total = len(grid) * epochs
        self.notify = notify
        self._epochs_of: dict[float, int] = {}
        self._leader: tuple[float, float] | None = None  # (val accuracy, max_lr)

    @property
    def done(self) -> int:
        return sum(self._epochs_of.values())

    def epoch_done(self, max_lr: float, epoch: int, val_accuracy: float) -> None:
        """Trial ``max_lr`` finished its ``epoch``-th epoch (1-based) at
        ``val_accuracy`` (or at its best so far: the leader is the same)."""
        self._epochs_of[max_lr] = max(epoch, self._epochs_of.get(max_lr, 0))
        if self._leader is None or val_accuracy > self._leader[0]:
            self._leader = (val_accuracy, max_lr)
        self.notify(self.note())

    def note(self) -> str:
        text = f"Oracle search: {self.done}/{self.total} trial epochs"
        if self._leader is not None:
            accuracy, max_lr = self._leader
            text += f", best so far max_lr {max_lr:g} ({accuracy:.1%} val)"
        return text


class OracleSearch(Protocol):
    """Runs one cycle's trials; returns None when a stop was asked for first.
    Each finished trial epoch is told to ``progress`` when one is given."""

    def __call__(
        self,
        start: TrialStart,
        grid: Sequence[float],
        should_stop: Callable[[], bool],
        progress: SearchProgress | None = None,
    ) -> SearchResult | None: ...


def best_index(val_accuracy: Sequence[float]) -> int:
    """The Oracle's choice: the highest validation accuracy; ties go to the
    first in the grid, so the choice never depends on the order trials end."""
    return max(range(len(val_accuracy)), key=lambda i: (val_accuracy[i], -i))


def search_in_process(train_trial: TrialRoutine) -> OracleSearch:
    """Trials one after the other, in this process, each trained by ``train_trial``."""

    def search(
        start: TrialStart,
        grid: Sequence[float],
        should_stop: Callable[[], bool],
        progress: SearchProgress | None = None,
    ) -> SearchResult | None:
        best: TrialOutcome | None = None
        accuracies: list[float] = []
        for max_lr in grid:
            on_epoch = None
            if progress is not None:

                def on_epoch(event: EpochEvent, scores: EpochScores, lr: float = max_lr) -> None:
                    progress.epoch_done(lr, event.epoch, scores.val_accuracy)

            trial = train_trial(start, max_lr, on_epoch)
            accuracies.append(trial.val_accuracy)
            if best_index(accuracies) == len(accuracies) - 1:
                best = trial  # only the leader's weights are kept in memory
            if should_stop():
                return None
        assert best is not None  # the grid has at least one value
        return SearchResult(best, accuracies)

    return search
