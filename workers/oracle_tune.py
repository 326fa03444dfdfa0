"""The Oracle's trials as parallel Ray Tune trials, inside the job's own reservation.

The attempt's actor holds the job's resources (CPUs, GPUs, memory) for the
whole attempt, and it sits idle while an Oracle cycle is searched. So the
trials take no Ray resources of their own: each trial's placement-group
bundle asks only for a sliver of the actor's node (``node:<ip>``), which pins
it beside the actor, and the trials share the actor's CPUs (``threads`` each)
and GPUs (the actor's GPU ids, made visible to the trial). The job therefore
never takes more of the cluster than its request, the dispatcher's accounting
and quotas stay true, and nothing waits on anything else for the same CPUs.

A cycle's trials run ``concurrent`` at a time (one per CPU of the job, at most
the grid's size). Every trial reports each epoch to Tune, so a cancel stops
the search within one trial epoch; the winner's weights come back as a Tune
checkpoint under the job's folder, which is removed once they are adopted.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from silo_contract.reports import EpochEvent
from silo_core.engine.oracle import (
    SearchProgress,
    SearchResult,
    TrialOutcome,
    TrialRoutine,
    TrialStart,
    best_index,
)
from silo_core.engine.trial import trial_routine_for
from silo_core.records import EpochScores
from silo_core.spec import JobSpec, OracleScheduleSpec

log = logging.getLogger("silo.workers.oracle")

OUTCOME_FILE = "trial.pt"
STOP_CHECK_SECONDS = 1.0
NODE_SLIVER = 0.001  # of the node's "node:<ip>" resource (1.0): pins a trial, reserves nothing


@dataclass(frozen=True)
class TrialSlots:
    """How one job's reservation is shared by its concurrent trials."""

    node_ip: str
    concurrent: int
    threads: int  # torch threads per trial
    gpu_ids: tuple[str, ...] = ()

    @classmethod
    def of_this_actor(cls, grid_size: int) -> TrialSlots:
        """Share what Ray assigned to the calling actor (or task)."""
        context = ray.get_runtime_context()
        cpus = context.get_assigned_resources().get("CPU", 1.0)
        return cls.sharing(
            cpus,
            grid_size,
            node_ip=ray.util.get_node_ip_address(),
            gpu_ids=tuple(context.get_accelerator_ids().get("GPU", ())),
        )

    @classmethod
    def sharing(
        cls, cpus: float, grid_size: int, *, node_ip: str, gpu_ids: tuple[str, ...] = ()
    ) -> TrialSlots:
        whole = max(1, math.floor(cpus))
        concurrent = max(1, min(grid_size, whole))
        return cls(node_ip, concurrent, max(1, whole // concurrent), gpu_ids)


@dataclass
class TrialRun:
    """What the log (and a curious test) learns about one finished trial."""

    max_lr: float
    val_accuracy: float
    pid: int
    started: float  # wall clock, seconds since the epoch
    ended: float


@dataclass
class TuneOracleSearch:
    """An ``OracleSearch`` whose trials run on Ray Tune; see the module's notes."""

    storage: Path  # where Tune keeps a cycle's trials until the winner is adopted
    slots: TrialSlots
    last_trials: list[TrialRun] = field(default_factory=list)
    # How a trial's process gets the routine that trains it: the job's own
    # network stays in the job's process, so each trial builds one from the spec.
    routine_for: Callable[[JobSpec], TrialRoutine] = trial_routine_for

    def __call__(
        self,
        start: TrialStart,
        grid: Sequence[float],
        should_stop: Callable[[], bool],
        progress: SearchProgress | None = None,
    ) -> SearchResult | None:
        name = f"cycle-{start.cycle}"
        folder = self.storage.resolve() / name
        shutil.rmtree(folder, ignore_errors=True)  # a killed attempt's half-finished search
        stopper = _StopWhenAsked(should_stop)
        trainable = tune.with_parameters(
            _run_trial,
            start=start,
            threads=self.slots.threads,
            gpu_ids=self.slots.gpu_ids,
            routine_for=self.routine_for,
        )
        sliver = tune.PlacementGroupFactory([{f"node:{self.slots.node_ip}": NODE_SLIVER}])
        tuner = tune.Tuner(
            tune.with_resources(trainable, sliver),
            param_space={"max_lr": tune.grid_search(list(grid))},
            # reuse_actors: a trial process (torch imported, data loaded) serves the next trial
            tune_config=tune.TuneConfig(
                max_concurrent_trials=self.slots.concurrent, reuse_actors=True
            ),
            run_config=tune.RunConfig(
                name=name,
                storage_path=str(folder.parent),
                stop=stopper,
                callbacks=[_TellProgress(progress)] if progress else [],
                verbose=0,
                failure_config=tune.FailureConfig(max_failures=0),
            ),
        )
        log.info(
            "oracle cycle %d: %d trials, %d at a time, %d threads each%s",
            start.cycle,
            len(grid),
            self.slots.concurrent,
            self.slots.threads,
            f", GPUs {','.join(self.slots.gpu_ids)}" if self.slots.gpu_ids else "",
        )
        try:
            results = tuner.fit()
            if stopper.asked:
                return None
            return self._collect(results, grid)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def _collect(self, results: Any, grid: Sequence[float]) -> SearchResult:
        by_lr = {}
        for result in results:
            max_lr = result.config["max_lr"]
            if result.error is not None:
                raise RuntimeError(f"the Oracle trial with max_lr {max_lr} failed: {result.error}")
            by_lr[max_lr] = result
        accuracies = [by_lr[max_lr].metrics["best_val_accuracy"] for max_lr in grid]
        self.last_trials = [
            TrialRun(
                max_lr,
                by_lr[max_lr].metrics["best_val_accuracy"],
                by_lr[max_lr].metrics["pid"],
                by_lr[max_lr].metrics["started"],
                by_lr[max_lr].metrics["ended"],
            )
            for max_lr in grid
        ]
        for trial in self.last_trials:
            log.info(
                "  max_lr %g: best val accuracy %.4f (pid %d, %.1f s)",
                trial.max_lr,
                trial.val_accuracy,
                trial.pid,
                trial.ended - trial.started,
            )
        winner = by_lr[grid[best_index(accuracies)]]
        with winner.checkpoint.as_directory() as directory:
            best = _load_outcome(Path(directory) / OUTCOME_FILE)
        return SearchResult(best, accuracies)


class _StopWhenAsked(tune.Stopper):
    """Ends the whole search once the job is asked to stop (cancel, superseded).

    Tune asks on every turn of its loop, many times a second; the job's stop
    check is a request to the API, so it is made at most every STOP_CHECK_SECONDS."""

    def __init__(self, should_stop: Callable[[], bool]) -> None:
        self.should_stop = should_stop
        self.asked = False
        self._checked = -math.inf

    # Tune's Stopper signature; this stopper ends every trial or none.
    def __call__(self, trial_id: str, result: dict) -> bool:  # noqa: ARG002
        return self.stop_all()

    def stop_all(self) -> bool:
        now = time.monotonic()
        if not self.asked and now - self._checked >= STOP_CHECK_SECONDS:
            self._checked = now
            self.asked = self.should_stop()
        return self.asked

    # Tune pickles its stopper into the experiment's state snapshot; the stop
    # check (the reporter's, with its HTTP client and locks) stays behind. A
    # search is never resumed from that snapshot: a new attempt searches anew.
    def __getstate__(self) -> dict[str, Any]:
        return {"asked": self.asked}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.asked, self._checked = state["asked"], -math.inf
        self.should_stop = lambda: self.asked


class _TellProgress(tune.Callback):
    """Passes every epoch a trial reports on to the search's progress note."""

    def __init__(self, progress: SearchProgress | None) -> None:
        self.progress = progress

    def on_trial_result(  # Tune's Callback signature; only the trial and its result matter
        self,
        iteration: int,  # noqa: ARG002
        trials: list,  # noqa: ARG002
        trial: Any,
        result: dict,
        **info: Any,  # noqa: ARG002
    ) -> None:
        if self.progress is not None:
            max_lr = trial.config["max_lr"]
            self.progress.epoch_done(max_lr, result["epoch"], result["best_val_accuracy"])

    # Pickled into the experiment's state like the stopper; the note's path
    # (the engine's reporter) stays behind.
    def __getstate__(self) -> dict[str, Any]:
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.progress = None


def _run_trial(
    config: dict[str, Any],
    *,
    start: TrialStart,
    threads: int,
    gpu_ids: tuple[str, ...],
    routine_for: Callable[[JobSpec], TrialRoutine],
) -> None:
    """One Tune trial: build the network from the spec and train one max_lr."""
    if gpu_ids:  # before CUDA starts in this process: the actor's GPUs, shared
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(gpu_ids)
    torch.set_num_threads(threads)
    started = time.time()
    train_trial = routine_for(start.spec)
    best = -math.inf

    def report(event: EpochEvent, scores: EpochScores) -> None:
        nonlocal best
        best = max(best, scores.val_accuracy)
        if event.epoch < event.epochs:  # the last epoch is reported with the checkpoint below
            tune.report({"epoch": event.epoch, "best_val_accuracy": best})

    outcome = train_trial(start, config["max_lr"], on_epoch=report)
    with tempfile.TemporaryDirectory() as directory:
        _save_outcome(outcome, Path(directory) / OUTCOME_FILE)
        metrics = {
            "epoch": len(outcome.events),
            "best_val_accuracy": outcome.val_accuracy,
            "pid": os.getpid(),
            "started": started,
            "ended": time.time(),
        }
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))


def _save_outcome(outcome: TrialOutcome, path: Path) -> None:
    # Plain containers and tensors only, so loading needs no pickled classes.
    torch.save(
        {
            "max_lr": outcome.max_lr,
            "events": [event.to_dict() for event in outcome.events],
            "scores": [vars(scores) for scores in outcome.scores],
            "model": outcome.model,
            "optimizer": outcome.optimizer,
        },
        path,
    )


def _load_outcome(path: Path) -> TrialOutcome:
    saved = torch.load(path, map_location="cpu", weights_only=True)
    return TrialOutcome(
        max_lr=saved["max_lr"],
        events=[EpochEvent(**event) for event in saved["events"]],
        scores=[EpochScores(**scores) for scores in saved["scores"]],
        model=saved["model"],
        optimizer=saved["optimizer"],
    )


def search_on_tune(spec: JobSpec, storage: Path) -> TuneOracleSearch | None:
    """The Tune search for an Oracle job running in this actor, or None where
    the engine should search in its own process: not an Oracle job, or a job
    with one CPU (its trials could only run one at a time, and a trial in the
    actor's own process skips a worker start and the weights' round trip)."""
    if not isinstance(spec.schedule, OracleScheduleSpec):
        return None
    slots = TrialSlots.of_this_actor(len(spec.schedule.grid))
    return TuneOracleSearch(storage, slots) if slots.concurrent > 1 else None
