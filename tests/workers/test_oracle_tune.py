"""The Oracle's trials as parallel Ray Tune trials on a real local Ray."""

from __future__ import annotations

import pytest
import ray
import torch

from silo_core.engine.runner import PruningEngine
from silo_core.spec import parse_spec
from workers.oracle_tune import TrialSlots, TuneOracleSearch

GRID = [0.003, 0.03, 0.3]
ORACLE_SPEC = {
    "model": {"name": "mlp"},
    "dataset": {"name": "digits"},
    "pruning": {"method": "global_magnitude", "fraction": 0.5, "cycles": 2},
    "schedule": {"name": "oracle", "grid": GRID},
    "training": {"epochs_per_cycle": 2, "batch_size": 128, "dense": {"epochs": 2, "max_lr": 0.1}},
    "seed": 11,
    "device": "cpu",
}


@pytest.fixture
def one_thread():
    """Trials get one thread each (two CPUs, two at a time); so does the reference."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tune_search(tmp_path) -> TuneOracleSearch:
    slots = TrialSlots.sharing(2, len(GRID), node_ip=ray.util.get_node_ip_address())
    return TuneOracleSearch(tmp_path / "oracle", slots)


class NoteTaker:
    """A reporter that keeps the progress notes only."""

    def __init__(self) -> None:
        self.notes: list[str | None] = []

    def on_epoch(self, event) -> None:
        pass

    def on_cycle(self, result) -> None:
        pass

    def on_note(self, note: str | None) -> None:
        self.notes.append(note)


def rows(result) -> list[dict]:
    return [{k: v for k, v in row.to_dict().items() if k != "seconds"} for row in result.cycles]


def test_the_job_cpus_are_shared_by_the_trials():
    assert TrialSlots.sharing(8, 7, node_ip="n") == TrialSlots("n", 7, 1)
    assert TrialSlots.sharing(8, 3, node_ip="n") == TrialSlots("n", 3, 2)
    assert TrialSlots.sharing(2.5, 7, node_ip="n", gpu_ids=("0",)) == TrialSlots("n", 2, 1, ("0",))
    assert TrialSlots.sharing(0.5, 7, node_ip="n").concurrent == 1


@pytest.mark.usefixtures("local_ray", "one_thread")
def test_tune_trials_run_side_by_side_and_choose_as_the_in_process_search(tmp_path):
    # Trials of a few seconds, so that running side by side shows in their clocks.
    training = {**ORACLE_SPEC["training"], "epochs_per_cycle": 60}
    spec = parse_spec(
        {**ORACLE_SPEC, "pruning": {**ORACLE_SPEC["pruning"], "cycles": 1}, "training": training}
    )
    reference = PruningEngine(spec).run()
    search = tune_search(tmp_path)
    notes = NoteTaker()
    result = PruningEngine(spec, oracle_search=search, reporter=notes).run()

    assert rows(result) == rows(reference)  # same choices, same accuracies, same weights
    for name, tensor in reference.model_state.items():
        assert torch.equal(result.model_state[name], tensor), name
    chosen = [row.max_lr for row in result.cycles[1:]]
    assert all(max_lr in GRID for max_lr in chosen)
    # The last cycle's trials ran in two processes at once, not one after another.
    trials = search.last_trials
    assert [t.max_lr for t in trials] == GRID
    first, second = trials[0], trials[1]
    assert first.pid != second.pid
    assert first.started < second.ended and second.started < first.ended
    assert not any((tmp_path / "oracle").iterdir())  # the trials' files are gone
    # Every epoch of every trial moved the job's progress note, then it was cleared.
    total = 60 * len(GRID)
    counted = [int(note.split(": ")[1].split("/")[0]) for note in notes.notes[:-1]]
    assert counted == list(range(1, total + 1)) and notes.notes[-1] is None
    assert notes.notes[-2].startswith(f"Oracle search: {total}/{total} trial epochs, best so far")


class StopOnCall:
    """should_stop that says yes from its n-th call on."""

    def __init__(self, n: int) -> None:
        self.calls, self.n = 0, n

    def __call__(self) -> bool:
        self.calls += 1
        return self.calls >= self.n


@pytest.mark.usefixtures("local_ray", "one_thread")
def test_a_stop_during_the_search_ends_it_and_the_job_resumes_as_if_never_stopped(tmp_path):
    from silo_core.engine.checkpoint import LocalCheckpointStore

    spec = parse_spec(ORACLE_SPEC)
    store = LocalCheckpointStore(tmp_path / "checkpoint")
    stop = StopOnCall(4)  # two dense epochs, then inside cycle 1's search
    stopped = PruningEngine(
        spec, store=store, should_stop=stop, oracle_search=tune_search(tmp_path)
    ).run()
    assert stopped.stopped
    assert [row.cycle for row in stopped.cycles] == [0]
    assert stop.calls >= 4

    resumed = PruningEngine(spec, store=store, oracle_search=tune_search(tmp_path)).run()
    reference = PruningEngine(spec).run()
    assert rows(resumed) == rows(reference)
