"""The prune-retrain engine.

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
from typing import Any, Literal, Protocol

import numpy as np
import torch

from silo_contract.reports import CycleResult, EpochEvent
from silo_core.data import DatasetInfo, Splits, load_dataset
from silo_core.engine.build import (
    build_optimizer,
    dense_schedule,
    oracle_trial_schedule,
    resolve_device,
    retraining_schedule,
)
from silo_core.engine.checkpoint import CheckpointStore, DenseCache
from silo_core.engine.device_plan import plan_for
from silo_core.engine.oracle import (
    OracleSearch,
    SearchProgress,
    SearchResult,
    TrialOutcome,
    TrialStart,
    search_in_process,
)
from silo_core.engine.training import evaluate, train_epoch
from silo_core.models import build_model
from silo_core.pruning import MaskSet, prunable_weights
from silo_core.records import EpochScores
from silo_core.schedules import Schedule
from silo_core.spec import JobSpec, OracleScheduleSpec
from silo_core.weights import load_weights

CHECKPOINT_VERSION = 1


class Reporter(Protocol):
    """Where a job's progress goes. A reporter may also have ``on_note(text |
    None)``: what the job is doing while no epoch is reported (the Oracle's
    search); None clears it."""

    def on_epoch(self, event: EpochEvent) -> None: ...
    def on_cycle(self, result: CycleResult) -> None: ...


class CheckpointMismatchError(RuntimeError):
    """The checkpoint found in the store was written by another spec."""


@dataclass
class JobResult:
    cycles: list[CycleResult]
    model_state: dict[str, torch.Tensor]
    masks: dict[str, torch.Tensor]
    stopped: bool
    identity: str
    info: DatasetInfo  # the input shape and classes the model was built for


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
class _Progress:
    """Everything about where the job is that a checkpoint must restore."""

    cycle: int = 0
    epochs_done: int = 0
    cycle_seconds: float = 0.0
    epochs: list[EpochScores] = field(default_factory=list)
    results: list[CycleResult] = field(default_factory=list)
    oracle_choice: dict[int, float] = field(default_factory=dict)  # cycle -> chosen max_lr


def derived_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from (job seed, cycle, epoch, ...)."""
    return int(
        np.random.SeedSequence(list(parts))
        .generate_state(2, dtype=np.uint32)
        .astype(np.uint64)
        .dot([1 << 31, 1])
    )


def _cpu_copy(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}


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
        as a path here (the service resolves its references to one)."""
        self.spec = spec
        self.weights = weights
        self.on_start = on_start
        self.start: RunStart | None = None
        self.oracle_search = oracle_search or search_in_process(self)
        self.reporter = reporter
        self.store = store
        self.dense_cache = dense_cache
        self._dense_events: list[EpochEvent] | None = []  # None: incomplete (resumed)
        self.should_stop = should_stop or (lambda: False)
        self.device = resolve_device(spec.device)
        self.data = data or load_dataset(
            spec.dataset.name,
            device=self.device,
            root=spec.dataset.root,
            download=spec.dataset.download,
            val_fraction=spec.dataset.val_fraction,
            split_seed=spec.dataset.split_seed,
            options=spec.dataset.options,
        )
        self.augment = (
            spec.dataset.augment if spec.dataset.augment is not None else self.data.augment_default
        )
        self.cycles = spec.pruning.planned_cycles()
        self.dense = dense_schedule(spec)
        self.retraining = retraining_schedule(spec)
        torch.manual_seed(spec.seed)
        info = self.data.info
        self.model = build_model(
            spec.model.name,
            in_channels=info.in_channels,
            num_classes=info.num_classes,
            image_size=info.image_size,
        ).to(self.device)
        self.masks = MaskSet(
            prunable_weights(
                self.model,
                keep_first_conv_dense=spec.pruning.keep_first_conv_dense,
                keep_last_linear_dense=spec.pruning.keep_last_linear_dense,
            )
        )
        self.plan = plan_for(spec.training, self.device, self.model)
        self.optimizer = build_optimizer(spec.optimizer, self.model)
        self.rewind_state: dict[str, torch.Tensor] | None = None
        self.progress = _Progress()

    # -- public -------------------------------------------------------------
    def schedule_for(self, cycle: int) -> Schedule:
        if cycle == 0:
            return self.dense
        oracle = self.spec.schedule
        if isinstance(oracle, OracleScheduleSpec) and cycle in self.progress.oracle_choice:
            return oracle_trial_schedule(oracle, self.progress.oracle_choice[cycle])
        return self.retraining

    def epochs_in(self, cycle: int) -> int:
        return (
            self.spec.training.dense_epochs if cycle == 0 else self.spec.training.epochs_per_cycle
        )

    def run(self) -> JobResult:
        saved = self.store.load() if self.store else None
        shared = self._shared_dense() if saved is None else None
        identity = self.spec.dense_identity()
        if saved is not None:
            self._restore(saved)
            self._dense_events = None
            p = self.progress
            self.start = RunStart(
                "checkpoint", identity, p.cycle, p.epochs_done, self.epochs_in(p.cycle)
            )
        elif shared is not None:
            self._adopt_dense(shared)
            self.start = RunStart("shared dense", identity)
        else:
            if self.weights is not None:
                # Before anything is trained: weights that do not fit fail the job now.
                load_weights(self.model, self.weights)
                self.masks.mask_zeros_()
            if self._rewinds_to(0):
                self.rewind_state = _cpu_copy(self.model.state_dict())
            self.start = RunStart("scratch", identity)
        if self.on_start:
            self.on_start(self.start)
        p = self.progress
        while p.cycle <= self.cycles and not self._target_reached():
            cycle = p.cycle
            if cycle == 0 and self.epochs_in(0) == 0:
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
            self.masks.mask_optimizer_state_(self.optimizer)
        else:
            self.optimizer = build_optimizer(self.spec.optimizer, self.model)

    def _train_epoch(
        self, cycle: int, epoch: int, schedule: Schedule
    ) -> tuple[EpochEvent, EpochScores]:
        """Train and score epoch ``epoch`` (0-based) of ``cycle``; no bookkeeping."""
        started = time.perf_counter()
        epochs = self.epochs_in(cycle)
        batch_size = self.spec.training.batch_size
        steps_per_epoch = -(-self.data.train.num_examples // batch_size)
        total_steps = epochs * steps_per_epoch
        batches = self.data.train.batches(
            batch_size,
            shuffle=True,
            augment=self.augment,
            seed=derived_seed(self.spec.seed, cycle, epoch),
        )
        train_loss, train_acc, lr = train_epoch(
            self.model,
            batches,
            self.optimizer,
            self.masks,
            lambda step: schedule.lr(cycle, epoch * steps_per_epoch + step, total_steps),
            self.plan,
        )
        val_loss, val_acc = evaluate(self.model, self._eval_batches(self.data.val), self.plan)
        _, test_acc = evaluate(self.model, self._eval_batches(self.data.test), self.plan)
        event = EpochEvent(
            cycle=cycle,
            epoch=epoch + 1,
            epochs=epochs,
            cycles=self.cycles,
            lr=lr,
            max_lr=schedule.max_lr(cycle),
            train_loss=train_loss,
            train_accuracy=train_acc,
            val_loss=val_loss,
            val_accuracy=val_acc,
            sparsity=self.masks.sparsity(),
            seconds=time.perf_counter() - started,
        )
        return event, EpochScores(val_loss, val_acc, test_acc)

    def _run_epoch(self) -> None:
        p = self.progress
        cycle = p.cycle
        event, scores = self._train_epoch(cycle, p.epochs_done, self.schedule_for(cycle))
        p.epochs.append(scores)
        p.cycle_seconds += event.seconds
        p.epochs_done += 1
        if cycle == 0 and self._rewinds_to(p.epochs_done):
            self.rewind_state = _cpu_copy(self.model.state_dict())
        if self.reporter:
            self.reporter.on_epoch(event)
        if cycle == 0 and self._dense_events is not None:
            self._dense_events.append(event)
        if p.epochs_done == self.epochs_in(cycle):
            self._finish_cycle()
        checkpoint = self._checkpoint() if self.store or self.dense_cache else None
        if self.store:
            self.store.save(checkpoint)
        if cycle == 0 and p.cycle == 1:
            self._share_dense(checkpoint)

    def _evaluate_dense(self) -> None:
        """Cycle 0 without training (``training.dense.epochs: 0``): the starting
        weights are the dense network, scored as they are, and shared as a
        trained one would be."""
        started = time.perf_counter()
        val_loss, val_acc = evaluate(self.model, self._eval_batches(self.data.val), self.plan)
        _, test_acc = evaluate(self.model, self._eval_batches(self.data.test), self.plan)
        p = self.progress
        p.epochs = [EpochScores(val_loss, val_acc, test_acc)]
        p.cycle_seconds = time.perf_counter() - started
        self._finish_cycle(best_epoch=0)
        checkpoint = self._checkpoint() if self.store or self.dense_cache else None
        if self.store:
            self.store.save(checkpoint)
        self._share_dense(checkpoint)

    # -- the dense training, shared between jobs ------------------------------
    def _shared_dense(self) -> dict[str, Any] | None:
        return self.dense_cache.load(self.spec.dense_identity()) if self.dense_cache else None

    def _share_dense(self, checkpoint: dict[str, Any] | None) -> None:
        """Offer the finished dense training to jobs with the same dense identity."""
        if self.dense_cache is None or checkpoint is None or self._dense_events is None:
            return
        identity = self.spec.dense_identity()
        if self.dense_cache.load(identity) is None:
            events = [event.to_dict() for event in self._dense_events]
            self.dense_cache.save(identity, {**checkpoint, "identity": identity, "events": events})

    def _adopt_dense(self, shared: dict[str, Any]) -> None:
        """Start from another job's dense training, exactly where it stood after
        cycle 0, and report its cycle 0 as this job's own."""
        state = dict(shared)
        events = [EpochEvent(**{**e, "cycles": self.cycles}) for e in state.pop("events")]
        self._restore(state, identity=self.spec.dense_identity())
        if self.reporter:
            for event in events:
                self.reporter.on_epoch(event)
            self.reporter.on_cycle(self.progress.results[0])
        if self.store:
            self.store.save(self._checkpoint())

    def _oracle_cycle(self, cycle: int, oracle: OracleScheduleSpec) -> bool:
        """Search the cycle's max_lr (see silo_core.engine.oracle) and go on from
        the best trial. A cycle is one unit: checkpoints come before and after
        it, so a resumed job searches the cycle again, the same way. Returns
        False when a stop was asked for during the search."""
        start = TrialStart(
            spec=self.spec,
            cycle=cycle,
            model=_cpu_copy(self.model.state_dict()),
            masks=self.masks.state_dict(),
            rng=torch.get_rng_state(),
        )
        began = time.perf_counter()
        progress = SearchProgress(oracle.grid, self.epochs_in(cycle), self._note)
        try:
            searched = self.oracle_search(start, oracle.grid, self.should_stop, progress)
        finally:
            self._note(None)
        if searched is None:
            return False
        self._adopt_trial(searched.best)
        p = self.progress
        p.oracle_choice[cycle] = searched.best.max_lr
        p.cycle_seconds = time.perf_counter() - began
        if self.reporter:
            for event in searched.best.events:
                self.reporter.on_epoch(event)
        self._finish_cycle(_oracle_extras(oracle, searched))
        if self.store:
            self.store.save(self._checkpoint())
        return not self.should_stop()

    def _note(self, text: str | None) -> None:
        on_note = getattr(self.reporter, "on_note", None)
        if on_note is not None:
            on_note(text)

    def train_trial(
        self,
        start: TrialStart,
        max_lr: float,
        on_epoch: Callable[[EpochEvent, EpochScores], None] | None = None,
    ) -> TrialOutcome:
        """Retrain cycle ``start.cycle`` from ``start`` with a constant peak
        ``max_lr``: one Oracle trial. Leaves the engine at the trial's end."""
        self.model.load_state_dict(start.model)
        self.masks.load_state_dict(start.masks)
        torch.set_rng_state(start.rng)
        self.optimizer = build_optimizer(self.spec.optimizer, self.model)
        schedule = oracle_trial_schedule(self._oracle_spec(), max_lr)
        epochs = []
        for epoch in range(self.epochs_in(start.cycle)):
            epochs.append(self._train_epoch(start.cycle, epoch, schedule))
            if on_epoch:
                on_epoch(*epochs[-1])
        return TrialOutcome(
            max_lr=max_lr,
            events=[event for event, _ in epochs],
            scores=[scores for _, scores in epochs],
            model=_cpu_copy(self.model.state_dict()),
            optimizer=self.optimizer.state_dict(),
        )

    def _adopt_trial(self, trial: TrialOutcome) -> None:
        self.model.load_state_dict(trial.model)
        self.optimizer = build_optimizer(self.spec.optimizer, self.model)
        self.optimizer.load_state_dict(trial.optimizer)
        p = self.progress
        p.epochs, p.epochs_done = list(trial.scores), len(trial.scores)

    def _oracle_spec(self) -> OracleScheduleSpec:
        oracle = self.spec.schedule
        assert isinstance(oracle, OracleScheduleSpec), "only an Oracle job has trials"
        return oracle

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
        if self.reporter:
            self.reporter.on_cycle(result)
        if self.store:
            self.store.save_cycle(
                p.cycle, {"model": self.model.state_dict(), "masks": self.masks.state_dict()}
            )
        p.cycle += 1
        p.epochs_done = 0
        p.epochs = []
        p.cycle_seconds = 0.0

    # -- helpers ------------------------------------------------------------
    def _eval_batches(self, source: Any) -> Any:
        return source.batches(
            max(self.spec.training.batch_size, 512), shuffle=False, augment=False, seed=0
        )

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
            model_state=_cpu_copy(self.model.state_dict()),
            masks=self.masks.state_dict(),
            stopped=stopped,
            identity=self.spec.identity(),
            info=self.data.info,
        )

    # -- checkpoints ----------------------------------------------------------
    def _checkpoint(self) -> dict[str, Any]:
        p = self.progress
        rng: dict[str, Any] = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            "version": CHECKPOINT_VERSION,
            "identity": self.spec.identity(),
            "cycle": p.cycle,
            "epochs_done": p.epochs_done,
            "cycle_seconds": p.cycle_seconds,
            "epochs": [vars(e) for e in p.epochs],
            "results": [r.to_dict() for r in p.results],
            "oracle_choice": dict(p.oracle_choice),
            "model": self.model.state_dict(),
            "masks": self.masks.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rewind": self.rewind_state,
            "rng": rng,
        }

    def _restore(self, state: dict[str, Any], identity: str | None = None) -> None:
        if state.get("version") != CHECKPOINT_VERSION:
            raise CheckpointMismatchError(
                f"checkpoint format {state.get('version')} is not {CHECKPOINT_VERSION}"
            )
        expected = identity or self.spec.identity()
        if state["identity"] != expected:
            raise CheckpointMismatchError(
                f"checkpoint belongs to spec {state['identity']}, not {expected}"
            )
        self.model.load_state_dict(state["model"])
        self.masks.load_state_dict(state["masks"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.rewind_state = state["rewind"]
        torch.set_rng_state(state["rng"]["torch"])
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        self.progress = _Progress(
            cycle=state["cycle"],
            epochs_done=state["epochs_done"],
            cycle_seconds=state["cycle_seconds"],
            epochs=[EpochScores(**e) for e in state["epochs"]],
            results=[CycleResult.from_dict(r) for r in state["results"]],
            oracle_choice=dict(state.get("oracle_choice") or {}),
        )


def _oracle_extras(oracle: OracleScheduleSpec, searched: SearchResult) -> dict[str, Any]:
    return {"oracle": {"grid": list(oracle.grid), "best_val_accuracy": searched.val_accuracy}}
