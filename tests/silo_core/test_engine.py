"""The prune-retrain engine on the embedded digits data: end to end, resume, modes."""

import re

import pytest
import torch

from silo_core.engine import (
    CheckpointMismatchError,
    CycleResult,
    EpochEvent,
    LocalCheckpointStore,
    NullReporter,
    PruningEngine,
)
from silo_core.spec import parse_spec

TIME_FIELDS = {"seconds"}


def small_spec(**overrides):
    data = {
        "model": {"name": "mlp"},
        "dataset": {"name": "digits"},
        "pruning": {"fraction": 0.2, "cycles": 2},
        "schedule": {"name": "silo"},
        "training": {"epochs_per_cycle": 2, "batch_size": 64, "dense": {"epochs": 2}},
        "seed": 3,
        "device": "cpu",
    }
    for key, value in overrides.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return parse_spec(data)


class Recorder(NullReporter):
    def __init__(self) -> None:
        self.events: list[EpochEvent] = []
        self.cycles: list[CycleResult] = []

    def on_epoch(self, event: EpochEvent) -> None:
        self.events.append(event)

    def on_cycle(self, result: CycleResult) -> None:
        self.cycles.append(result)


def table(result) -> list[dict]:
    return [{k: v for k, v in c.to_dict().items() if k not in TIME_FIELDS} for c in result.cycles]


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class StopAfter:
    """A stop request after `n` epochs, as a cancel or a crash would cut a run."""

    def __init__(self, n: int) -> None:
        self.remaining = n

    def __call__(self) -> bool:
        self.remaining -= 1
        return self.remaining <= 0


def test_events_and_cycles_are_reported_in_order():
    recorder = Recorder()
    result = PruningEngine(small_spec(), reporter=recorder).run()
    keys = [(e.cycle, e.epoch) for e in recorder.events]
    assert keys == [(0, 1), (0, 2), (1, 1), (1, 2), (2, 1), (2, 2)]
    assert [c.cycle for c in recorder.cycles] == [0, 1, 2]
    assert recorder.cycles == result.cycles
    assert not result.stopped
    assert recorder.events[0].sparsity == 0.0
    assert recorder.events[-1].sparsity == pytest.approx(0.36, abs=1e-4)


def test_each_cycle_uses_the_schedules_max_lr():
    spec = small_spec(pruning={"cycles": 4}, schedule={"name": "silo", "preset": "resnet20"})
    result = PruningEngine(spec).run()
    expected = [0.1, 0.03, 0.03004, 0.03213, 0.04761]  # cycle 0 is the dense training's LR
    assert [round(c.max_lr, 5) for c in result.cycles] == expected


def test_same_seed_same_table_other_seed_other_weights():
    a = PruningEngine(small_spec()).run()
    b = PruningEngine(small_spec()).run()
    c = PruningEngine(small_spec(seed=4)).run()
    assert table(a) == table(b)
    assert same_weights(a.model_state, b.model_state)
    assert not same_weights(a.model_state, c.model_state)


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"pruning": {"fraction": 0.2, "cycles": 2, "retraining": "fine_tune", "method": "random"}},
        {
            "pruning": {
                "fraction": 0.2,
                "cycles": 2,
                "retraining": "weight_rewind",
                "rewind_epoch": 1,
            }
        },
        {"schedule": {"name": "clr"}, "optimizer": {"name": "adamw", "weight_decay": 0.01}},
    ],
    ids=["lr_rewind", "fine_tune_random", "weight_rewind_epoch1", "clr_adamw"],
)
def test_resuming_after_any_epoch_gives_the_uninterrupted_result(tmp_path, overrides):
    spec = small_spec(**overrides)
    reference = PruningEngine(spec).run()
    total_epochs = 2 + 2 * 2
    for stop_after in range(1, total_epochs):
        store = LocalCheckpointStore(tmp_path / f"stop{stop_after}")
        first = PruningEngine(spec, store=store, should_stop=StopAfter(stop_after)).run()
        assert first.stopped
        assert len(first.cycles) == stop_after // 2
        resumed = PruningEngine(spec, store=store).run()
        assert table(resumed) == table(reference), f"stopped after epoch {stop_after}"
        assert same_weights(resumed.model_state, reference.model_state)
        assert same_weights(resumed.masks, reference.masks)


def test_finished_checkpoint_returns_the_same_result_without_training(tmp_path):
    store = LocalCheckpointStore(tmp_path)
    first = PruningEngine(small_spec(), store=store).run()
    recorder = Recorder()
    again = PruningEngine(small_spec(), store=store, reporter=recorder).run()
    assert recorder.events == []
    assert table(again) == table(first)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "cycle_000",
        "cycle_001",
        "cycle_002",
        "latest.pt",
    ]


def test_checkpoint_of_another_spec_is_refused(tmp_path):
    store = LocalCheckpointStore(tmp_path)
    PruningEngine(small_spec(), store=store, should_stop=StopAfter(1)).run()
    with pytest.raises(CheckpointMismatchError, match="belongs to spec"):
        PruningEngine(small_spec(seed=9), store=store).run()


def test_weight_rewinding_restarts_from_the_masked_initialisation():
    spec = small_spec(
        pruning={"fraction": 0.5, "cycles": 1, "retraining": "weight_rewind", "rewind_epoch": 0}
    )
    engine = PruningEngine(spec, should_stop=StopAfter(2))  # stop after dense training
    init = {k: v.clone() for k, v in engine.model.state_dict().items()}
    engine.run()
    engine._start_cycle(1)
    masks = dict(zip(engine.masks.names, engine.masks.masks, strict=True))
    for name, value in engine.model.state_dict().items():
        expected = init[name] * masks[name] if name in masks else init[name]
        assert torch.equal(value, expected), name


def test_target_sparsity_stops_at_the_first_cycle_reaching_it():
    spec = small_spec(pruning={"fraction": 0.5, "cycles": None, "target_sparsity": 0.7})
    result = PruningEngine(spec).run()
    assert [round(c.sparsity, 3) for c in result.cycles] == [0.0, 0.5, 0.75]


@pytest.mark.slow
def test_digits_job_reaches_a_sensible_accuracy_and_the_planned_sparsity():
    # A dense MLP reaches about 97% test accuracy on digits (10 classes, chance 10%).
    # Five cycles at p = 0.2 keep a third of the weights, which this small task
    # tolerates: 90% is a floor a working prune-retrain loop clears with room,
    # and a broken one (masks lost, LR not applied, wrong labels) does not.
    spec = small_spec(
        pruning={"fraction": 0.2, "cycles": 5},
        training={"epochs_per_cycle": 6, "batch_size": 64, "dense": {"epochs": 15}},
    )
    result = PruningEngine(spec).run()
    assert result.cycles[0].test_accuracy_at_best_val >= 0.93
    last = result.cycles[-1]
    assert last.sparsity == pytest.approx(1 - 0.8**5, abs=1e-4)
    assert last.test_accuracy_at_best_val >= 0.90
    zeros = sum(int((result.model_state[n] == 0).sum()) for n in result.masks)
    removed = sum(int((~m).sum()) for m in result.masks.values())
    assert zeros >= removed


def oracle_spec(grid, **overrides):
    return small_spec(schedule={"name": "oracle", "grid": grid}, **overrides)


def test_the_oracle_keeps_the_retraining_with_the_best_validation_accuracy():
    recorder = Recorder()
    result = PruningEngine(oracle_spec([1e-5, 0.05, 0.3]), reporter=recorder).run()
    for row in result.cycles[1:]:
        searched = row.extras["oracle"]
        assert searched["grid"] == [1e-5, 0.05, 0.3]
        accuracies = searched["best_val_accuracy"]
        chosen = searched["grid"][accuracies.index(max(accuracies))]  # ties: first in grid
        assert row.max_lr == chosen
        assert row.best_val_accuracy == max(accuracies)
        assert len(set(accuracies)) > 1  # the trials really retrained differently
    # Only the chosen retraining is reported, once per epoch, with its max_lr.
    keys = [(e.cycle, e.epoch) for e in recorder.events]
    assert keys == [(0, 1), (0, 2), (1, 1), (1, 2), (2, 1), (2, 2)]
    assert [e.max_lr for e in recorder.events if e.cycle == 1] == [result.cycles[1].max_lr] * 2


class NoteRecorder(Recorder):
    """A reporter that also takes progress notes, and the events seen before each."""

    def __init__(self) -> None:
        super().__init__()
        self.notes: list[tuple[str | None, int]] = []

    def on_note(self, note: str | None) -> None:
        self.notes.append((note, len(self.events)))


def test_the_oracle_search_says_how_far_it_is_while_its_epochs_stand_still():
    grid = [1e-5, 0.05, 0.3]
    recorder = NoteRecorder()
    result = PruningEngine(oracle_spec(grid), reporter=recorder).run()
    # Per cycle: one note per trial epoch (3 trials x 2 epochs), then a clear,
    # all before the chosen trial's epochs are reported.
    per_cycle = [recorder.notes[i : i + 7] for i in (0, 7)]
    assert len(recorder.notes) == 14
    note = re.compile(r"Oracle search: (\d)/6 trial epochs, best so far max_lr (\S+) \((.+) val\)")
    for cycle, notes in enumerate(per_cycle, start=1):
        texts = [text for text, _ in notes]
        assert texts[-1] is None
        parsed = [note.fullmatch(text).groups() for text in texts[:-1]]
        assert [int(done) for done, _, _ in parsed] == [1, 2, 3, 4, 5, 6]
        leader = result.cycles[cycle]
        assert parsed[-1][1:] == (f"{leader.max_lr:g}", f"{leader.best_val_accuracy:.1%}")
        # No event of this cycle went out during the search.
        assert {seen for _, seen in notes} == {2 * cycle}
    # A job without a search sends no notes.
    plain = NoteRecorder()
    PruningEngine(small_spec(), reporter=plain).run()
    assert plain.notes == []


def test_an_oracle_of_one_value_is_silo_with_that_constant_peak():
    """Each trial starts from the same weights and random state, so a grid of
    one value retrains exactly as SILO does with alpha 0 and that offset."""
    oracle = PruningEngine(oracle_spec([0.07])).run()
    silo = PruningEngine(small_spec(schedule={"name": "silo", "alpha": 0, "offset": 0.07})).run()

    def strip(result) -> list[dict]:
        return [{k: v for k, v in row.items() if k != "extras"} for row in table(result)]

    assert strip(oracle) == strip(silo)
    assert same_weights(oracle.model_state, silo.model_state)


@pytest.mark.parametrize("stop_after", [3, 5, 7])
def test_an_oracle_job_resumed_after_a_stop_ends_as_an_uninterrupted_one(tmp_path, stop_after):
    spec = oracle_spec([0.01, 0.1])
    reference = PruningEngine(spec).run()
    store = LocalCheckpointStore(tmp_path)
    stopped = PruningEngine(spec, store=store, should_stop=StopAfter(stop_after)).run()
    assert stopped.stopped
    resumed = PruningEngine(spec, store=store).run()
    assert table(resumed) == table(reference)
    assert same_weights(resumed.model_state, reference.model_state)


def test_oracle_grid_values_are_checked():
    from silo_core.spec import SpecError

    for grid, needle in (([], "grid"), ([0.1, 0.1], "distinct"), ([-1.0], "grid")):
        with pytest.raises(SpecError, match=needle):
            oracle_spec(grid)


def counting_epochs(engine: PruningEngine) -> list[int]:
    """The cycles of the epochs ``engine`` really trains, as it trains them."""
    trained: list[int] = []
    train = engine.trainer.train_epoch

    def counted(cycle, epoch, schedule):
        trained.append(cycle)
        return train(cycle, epoch, schedule)

    engine.trainer.train_epoch = counted
    return trained


def test_jobs_differing_after_cycle_0_share_one_dense_training(tmp_path):
    from silo_core.engine import LocalDenseCache

    cache = LocalDenseCache(tmp_path / "dense")
    silo, rewind = small_spec(), small_spec(schedule={"name": "lr_rewind"})
    assert silo.dense_identity() == rewind.dense_identity() != silo.identity()

    first = PruningEngine(silo, dense_cache=cache)
    first_trained = counting_epochs(first)
    first.run()
    assert first_trained.count(0) == 2  # the dense training ran here
    second_recorder = Recorder()
    second = PruningEngine(rewind, dense_cache=cache, reporter=second_recorder)
    second_trained = counting_epochs(second)
    shared = second.run()
    assert 0 not in second_trained  # ...and not again here
    # The same result as if it had trained its own dense network, cycle 0 included.
    alone = Recorder()
    reference = PruningEngine(rewind, reporter=alone).run()
    assert table(shared) == table(reference)
    assert same_weights(shared.model_state, reference.model_state)
    untimed = [{k: v for k, v in e.to_dict().items() if k != "seconds"} for e in alone.events]
    assert [
        {k: v for k, v in e.to_dict().items() if k != "seconds"} for e in second_recorder.events
    ] == untimed
    assert [c.cycle for c in second_recorder.cycles] == [0, 1, 2]


def test_the_engine_says_how_it_started(tmp_path):
    """From scratch, from its own checkpoint (though a dense training is shared by
    then), or from the shared dense training."""
    from silo_core.engine import LocalDenseCache, RunStart

    cache, store = LocalDenseCache(tmp_path / "dense"), LocalCheckpointStore(tmp_path / "job")
    spec, heard = small_spec(), []
    PruningEngine(
        spec, store=store, dense_cache=cache, should_stop=StopAfter(3), on_start=heard.append
    ).run()
    PruningEngine(spec, store=store, dense_cache=cache, on_start=heard.append).run()
    rewind = PruningEngine(
        small_spec(schedule={"name": "lr_rewind"}), dense_cache=cache, on_start=heard.append
    )
    rewind.run()
    identity = spec.dense_identity()
    assert heard == [
        RunStart("scratch", identity),
        RunStart("checkpoint", identity, cycle=1, epochs_done=1, epochs=2),
        RunStart("shared dense", identity),
    ]
    assert rewind.start == heard[-1]
    assert str(heard[1]) == "resumes its own checkpoint: cycle 1, 1 of 2 epochs done"


def test_another_seed_does_not_share_the_dense_training(tmp_path):
    from silo_core.engine import LocalDenseCache

    cache = LocalDenseCache(tmp_path / "dense")
    PruningEngine(small_spec(), dense_cache=cache).run()
    other = PruningEngine(small_spec(seed=4), dense_cache=cache)
    trained = counting_epochs(other)
    other.run()
    assert trained.count(0) == 2
