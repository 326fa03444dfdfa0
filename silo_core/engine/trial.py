"""An Oracle cycle's trials: where they start, how one trains, and going on
from the winner.

Every trial of a cycle starts from the same TrialStart (the freshly pruned
weights, masks and random state) with a fresh optimizer, so its result
depends on its max_lr alone, whether it runs in the job's process
(``trial_routine``) or in one of its own (``trial_routine_for``).
"""

from __future__ import annotations

import torch

from silo_contract.reports import EpochEvent
from silo_core.engine.build import oracle_trial_schedule
from silo_core.engine.epochs import EpochTrainer, cpu_copy
from silo_core.engine.oracle import TrialEpochCallback, TrialOutcome, TrialRoutine, TrialStart
from silo_core.records import EpochScores
from silo_core.spec import JobSpec, OracleScheduleSpec


def train_trial(
    trainer: EpochTrainer,
    start: TrialStart,
    max_lr: float,
    on_epoch: TrialEpochCallback | None = None,
) -> TrialOutcome:
    """Retrain cycle ``start.cycle`` from ``start`` with a constant peak ``max_lr``.
    Leaves ``trainer`` at the trial's end."""
    oracle = trainer.spec.schedule
    assert isinstance(oracle, OracleScheduleSpec), "only an Oracle job has trials"
    trainer.load(start.model, start.masks)
    torch.set_rng_state(start.rng)
    trainer.new_optimizer()
    schedule = oracle_trial_schedule(oracle, max_lr)
    epochs: list[tuple[EpochEvent, EpochScores]] = []
    for epoch in range(trainer.epochs_in(start.cycle)):
        epochs.append(trainer.train_epoch(start.cycle, epoch, schedule))
        if on_epoch is not None:
            on_epoch(*epochs[-1])
    return TrialOutcome(
        max_lr=max_lr,
        events=[event for event, _ in epochs],
        scores=[scores for _, scores in epochs],
        model=cpu_copy(trainer.model.state_dict()),
        optimizer=trainer.optimizer.state_dict(),
    )


def trial_routine(trainer: EpochTrainer) -> TrialRoutine:
    """Trials trained on ``trainer``'s network, in this process, one at a time."""

    def train(
        start: TrialStart, max_lr: float, on_epoch: TrialEpochCallback | None = None
    ) -> TrialOutcome:
        return train_trial(trainer, start, max_lr, on_epoch)

    return train


def trial_routine_for(spec: JobSpec) -> TrialRoutine:
    """Trials on a network and data of their own, built from ``spec``: for
    trials that run in another process than the job's."""
    return trial_routine(EpochTrainer(spec))


def trial_start(trainer: EpochTrainer, cycle: int) -> TrialStart:
    """Where every trial of ``cycle`` starts: ``trainer``'s network as it is now,
    freshly pruned, and the random state."""
    return TrialStart(
        spec=trainer.spec,
        cycle=cycle,
        model=cpu_copy(trainer.model.state_dict()),
        masks=trainer.masks.state_dict(),
        rng=torch.get_rng_state(),
    )


def adopt_trial(trainer: EpochTrainer, trial: TrialOutcome) -> None:
    """Go on from the trial's end: its weights and its optimizer's state (the
    masks are the trial's start's, which ``trainer`` has already)."""
    trainer.load(trial.model)
    trainer.new_optimizer()
    trainer.optimizer.load_state_dict(trial.optimizer)
