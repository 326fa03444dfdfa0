"""The prune-retrain engine: the cycle loop.

Cycle 0 trains the dense network. Each cycle t = 1..T removes a fraction p of
the weights still alive, resets what the retraining mode says to reset, and
retrains with the schedule's learning rate for cycle t. After every epoch the
engine reports an event, then writes a checkpoint, then honours a stop
request, in that order: an event is never lost by a crash (at worst it is
reported twice with the same (cycle, epoch) key), and a stopped job keeps
everything it finished.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from silo_contract.reports import CycleResult
from silo_core.data import Splits
from silo_core.engine.build import dense_schedule, oracle_trial_schedule, retraining_schedule
from silo_core.engine.checkpoint import (
    CheckpointState,
    CheckpointStore,
    NullCheckpointStore,
    RandomState,
)
from silo_core.engine.dense_sharing import DenseCache, DenseSharing, NullDenseCache, SharedDense
from silo_core.engine.epochs import EpochTrainer, cpu_copy, derived_seed
from silo_core.engine.oracle import OracleSearch, SearchProgress, SearchResult, search_in_process
from silo_core.engine.reporting import NullReporter, Reporter
from silo_core.engine.run_records import JobResult, RunStart
from silo_core.engine.trial import adopt_trial, trial_routine, trial_start
from silo_core.pruning import MaskSet
from silo_core.records import EpochScores
from silo_core.schedules import Schedule
from silo_core.spec import JobSpec, OracleScheduleSpec
from silo_core.weights import load_weights


@dataclass
class Progress:
    """Where the job is: what a checkpoint keeps besides the network."""

    cycle: int = 0
    epochs_done: int = 0
    cycle_seconds: float = 0.0
    epochs: list[EpochScores] = field(default_factory=list)
    results: list[CycleResult] = field(default_factory=list)
    oracle_choice: dict[int, float] = field(default_factory=dict)  # cycle -> chosen max_lr


def _never() -> bool:
    return False


def _ignore(start: RunStart) -> None:
    pass


class PruningEngine:
    """Runs one JobSpec from scratch or from the store's checkpoint."""

    def __init__(
        self,
        spec: JobSpec,
        *,
        reporter: Reporter | None = None,
        store: CheckpointStore | None = None,
        should_stop: Callable[[], bool] | None = None,
        data: Splits | None = None,
        dense_cache: DenseCache | None = None,
        oracle_search: OracleSearch | None = None,
        on_start: Callable[[RunStart], None] | None = None,
        weights: str | Path | None = None,
    ) -> None:
        """``on_start`` hears how ``run()`` began (``self.start`` keeps it) before
        any epoch is trained. ``weights``: the file ``spec.model.weights`` names,
        as a path here (the service resolves its references to one). Whatever is
        not given does nothing: no reports, no checkpoints, no sharing, no stop."""
        self.spec = spec
        self.weights = weights
        self.on_start = on_start or _ignore
        self.start: RunStart | None = None
        self.reporter = reporter if reporter is not None else NullReporter()
        self.store = store if store is not None else NullCheckpointStore()
        cache = dense_cache if dense_cache is not None else NullDenseCache()
        self.dense_sharing = DenseSharing(cache, spec.dense_identity())
        self.should_stop = should_stop or _never
        self.trainer = EpochTrainer(spec, data=data)
        self.oracle_search = oracle_search or search_in_process(trial_routine(self.trainer))
        self.cycles = self.trainer.cycles
        self.dense = dense_schedule(spec)
        self.retraining = retraining_schedule(spec)
        self.rewind_state: dict[str, torch.Tensor] | None = None
        self.progress = Progress()

    @property
    def model(self) -> torch.nn.Module:
        """The network being pruned."""
        return self.trainer.model

    @property
    def masks(self) -> MaskSet:
        return self.trainer.masks

    def schedule_for(self, cycle: int) -> Schedule:
        """The learning-rate schedule ``cycle`` trains with (an Oracle cycle's:
        the peak its search chose)."""
        if cycle == 0:
            return self.dense
        oracle = self.spec.schedule
        if isinstance(oracle, OracleScheduleSpec) and cycle in self.progress.oracle_choice:
            return oracle_trial_schedule(oracle, self.progress.oracle_choice[cycle])
        return self.retraining

    def run(self) -> JobResult:
        """Run the job to its last cycle, or until a stop is asked for (the
        result says ``stopped``; the checkpoint has everything finished)."""
        self.start = self._begin()
        self.on_start(self.start)
        p = self.progress
        while p.cycle <= self.cycles and not self._target_reached():
            cycle = p.cycle
            if cycle == 0 and self.trainer.epochs_in(0) == 0:
                self._evaluate_dense()
                continue
            if p.epochs_done == 0 and cycle > 0:
                self._start_cycle(cycle)
                if isinstance(self.spec.schedule, OracleScheduleSpec):
                    if not self._oracle_cycle(cycle, self.spec.schedule):
                        return self._result(stopped=True)
                    continue
            while p.cycle == cycle:  # _run_epoch moves p.cycle on after the last epoch
                self._run_epoch()
                if self.should_stop():
                    return self._result(stopped=True)
        return self._result(stopped=False)

    def _begin(self) -> RunStart:
        """Go on from the job's own checkpoint, else from a shared dense training,
        else from the starting weights (given, or initialised)."""
        identity = self.spec.dense_identity()
        saved = self.store.load()
        if saved is not None:
            self._restore(saved)
            self.dense_sharing.resumed()
            p = self.progress
            epochs = self.trainer.epochs_in(p.cycle)
            return RunStart("checkpoint", identity, p.cycle, p.epochs_done, epochs)
        shared = self.dense_sharing.find()
        if shared is not None:
            self._adopt_dense(shared)
            return RunStart("shared dense", identity)
        if self.weights is not None:
            # Before anything is trained: weights that do not fit fail the job now.
            load_weights(self.model, self.weights)
            self.masks.mask_zeros_()
        if self._rewinds_to(0):
            self.rewind_state = cpu_copy(self.model.state_dict())
        return RunStart("scratch", identity)

    # -- cycle steps ----------------------------------------------------------
    def _start_cycle(self, cycle: int) -> None:
        pruning = self.spec.pruning
        self.masks.prune_(
            pruning.fraction, pruning.method, seed=derived_seed(self.spec.seed, cycle)
        )
        if pruning.retraining == "weight_rewind":
            assert self.rewind_state is not None, "rewind point was never captured"
            self.model.load_state_dict(self.rewind_state)
            self.masks.apply_()
        if pruning.retraining == "fine_tune":
            self.masks.mask_optimizer_state_(self.trainer.optimizer)
        else:
            self.trainer.new_optimizer()

    def _run_epoch(self) -> None:
        p = self.progress
        cycle = p.cycle
        event, scores = self.trainer.train_epoch(cycle, p.epochs_done, self.schedule_for(cycle))
        p.epochs.append(scores)
        p.cycle_seconds += event.seconds
        p.epochs_done += 1
        if cycle == 0 and self._rewinds_to(p.epochs_done):
            self.rewind_state = cpu_copy(self.model.state_dict())
        self.reporter.on_epoch(event)
        if cycle == 0:
            self.dense_sharing.record(event)
        if p.epochs_done == self.trainer.epochs_in(cycle):
            self._finish_cycle()
        checkpoint = self._checkpoint()
        self.store.save(checkpoint)
        if cycle == 0 and p.cycle == 1:
            self.dense_sharing.offer(checkpoint)

    def _evaluate_dense(self) -> None:
        """Cycle 0 without training (``training.dense.epochs: 0``): the starting
        weights are the dense network, scored as they are, and shared as a
        trained one would be."""
        started = time.perf_counter()
        p = self.progress
        p.epochs = [self.trainer.score()]
        p.cycle_seconds = time.perf_counter() - started
        self._finish_cycle(best_epoch=0)
        checkpoint = self._checkpoint()
        self.store.save(checkpoint)
        self.dense_sharing.offer(checkpoint)

    def _adopt_dense(self, shared: SharedDense) -> None:
        """Start from another job's dense training, exactly where it stood after
        cycle 0, and report its cycle 0 as this job's own."""
        self._restore(shared.checkpoint, identity=self.spec.dense_identity())
        for event in shared.events_for(self.cycles):
            self.reporter.on_epoch(event)
        self.reporter.on_cycle(self.progress.results[0])
        self.store.save(self._checkpoint())

    def _oracle_cycle(self, cycle: int, oracle: OracleScheduleSpec) -> bool:
        """Search the cycle's max_lr (see silo_core.engine.oracle) and go on from
        the best trial. A cycle is one unit: checkpoints come before and after
        it, so a resumed job searches the cycle again, the same way. Returns
        False when a stop was asked for during the search."""
        start = trial_start(self.trainer, cycle)
        began = time.perf_counter()
        epochs = self.trainer.epochs_in(cycle)
        progress = SearchProgress(oracle.grid, epochs, self.reporter.on_note)
        try:
            searched = self.oracle_search(start, oracle.grid, self.should_stop, progress)
        finally:
            self.reporter.on_note(None)
        if searched is None:
            return False
        best = searched.best
        adopt_trial(self.trainer, best)
        p = self.progress
        p.epochs, p.epochs_done = list(best.scores), len(best.scores)
        p.oracle_choice[cycle] = best.max_lr
        p.cycle_seconds = time.perf_counter() - began
        for event in best.events:
            self.reporter.on_epoch(event)
        self._finish_cycle(_oracle_extras(oracle, searched))
        self.store.save(self._checkpoint())
        return not self.should_stop()

    def _finish_cycle(
        self, extras: dict[str, Any] | None = None, best_epoch: int | None = None
    ) -> None:
        """Record the cycle; ``best_epoch`` 0 says it was evaluated, not trained."""
        p = self.progress
        val = [e.val_accuracy for e in p.epochs]
        best = int(np.argmax(val))  # first best epoch: ties go to the earlier one
        result = CycleResult(
            cycle=p.cycle,
            sparsity=self.masks.sparsity(),
            alive_weights=self.masks.alive(),
            max_lr=self.schedule_for(p.cycle).max_lr(p.cycle),
            best_epoch=best + 1 if best_epoch is None else best_epoch,
            best_val_accuracy=val[best],
            test_accuracy_at_best_val=p.epochs[best].test_accuracy,
            final_val_accuracy=val[-1],
            final_test_accuracy=p.epochs[-1].test_accuracy,
            seconds=p.cycle_seconds,
            extras=extras or {},
        )
        p.results.append(result)
        self.reporter.on_cycle(result)
        self.store.save_cycle(p.cycle, self.model.state_dict(), self.masks.state_dict())
        p.cycle += 1
        p.epochs_done = 0
        p.epochs = []
        p.cycle_seconds = 0.0

    # -- helpers ------------------------------------------------------------
    def _rewinds_to(self, dense_epoch: int) -> bool:
        pruning = self.spec.pruning
        return pruning.retraining == "weight_rewind" and pruning.rewind_epoch == dense_epoch

    def _target_reached(self) -> bool:
        target = self.spec.pruning.target_sparsity
        results = self.progress.results
        return target is not None and bool(results) and results[-1].sparsity >= target

    def _result(self, *, stopped: bool) -> JobResult:
        return JobResult(
            cycles=list(self.progress.results),
            model_state=cpu_copy(self.model.state_dict()),
            masks=self.masks.state_dict(),
            stopped=stopped,
            identity=self.spec.identity(),
            info=self.trainer.info,
        )

    # -- checkpoints ----------------------------------------------------------
    def _checkpoint(self) -> CheckpointState:
        p = self.progress
        return CheckpointState(
            identity=self.spec.identity(),
            cycle=p.cycle,
            epochs_done=p.epochs_done,
            cycle_seconds=p.cycle_seconds,
            epochs=tuple(p.epochs),
            results=tuple(p.results),
            oracle_choice=dict(p.oracle_choice),
            model=self.model.state_dict(),
            masks=self.masks.state_dict(),
            optimizer=self.trainer.optimizer.state_dict(),
            rewind=self.rewind_state,
            rng=RandomState.capture(),
        )

    def _restore(self, state: CheckpointState, identity: str | None = None) -> None:
        """Go on from ``state``, which must be this spec's (or, for a shared dense
        training, the dense ``identity``)."""
        state.check_identity(identity or self.spec.identity())
        self.trainer.load(state.model, state.masks, state.optimizer)
        self.rewind_state = state.rewind
        state.rng.restore()
        self.progress = Progress(
            cycle=state.cycle,
            epochs_done=state.epochs_done,
            cycle_seconds=state.cycle_seconds,
            epochs=list(state.epochs),
            results=list(state.results),
            oracle_choice=dict(state.oracle_choice),
        )


def _oracle_extras(oracle: OracleScheduleSpec, searched: SearchResult) -> dict[str, Any]:
    return {"oracle": {"grid": list(oracle.grid), "best_val_accuracy": searched.val_accuracy}}
