"""The checkpoint's on-disk format: a job's next attempt must read what an earlier one wrote."""

import pytest
import torch
from test_engine import StopAfter, small_spec

from silo_core.engine import (
    CheckpointMismatchError,
    CheckpointState,
    LocalCheckpointStore,
    LocalDenseCache,
    PruningEngine,
)

# The keys of a checkpoint file: the format that CHECKPOINT_VERSION 1 names.
CHECKPOINT_KEYS = [
    "version",
    "identity",
    "cycle",
    "epochs_done",
    "cycle_seconds",
    "epochs",
    "results",
    "oracle_choice",
    "model",
    "masks",
    "optimizer",
    "rewind",
    "rng",
]


def same(a, b) -> bool:
    """Equal values, tensors compared by value, containers element by element."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return type(a) is type(b) and len(a) == len(b) and all(map(same, a, b))
    return a == b


def written_after(tmp_path, epochs: int, **overrides) -> dict:
    store = LocalCheckpointStore(tmp_path)
    PruningEngine(small_spec(**overrides), store=store, should_stop=StopAfter(epochs)).run()
    return torch.load(store.latest_path, weights_only=True)


def test_a_checkpoint_file_keeps_its_keys_and_reads_back_as_it_was_written(tmp_path):
    rewinding = {"pruning": {"fraction": 0.2, "cycles": 2, "retraining": "weight_rewind"}}
    saved = written_after(tmp_path, 3, **rewinding)  # inside cycle 1, a rewind point kept
    assert list(saved) == CHECKPOINT_KEYS
    assert (saved["version"], saved["cycle"], saved["epochs_done"]) == (1, 1, 1)
    assert set(saved["epochs"][0]) == {"val_loss", "val_accuracy", "test_accuracy"}
    assert saved["results"][0]["cycle"] == 0
    assert saved["rewind"] is not None and "torch" in saved["rng"]
    assert same(CheckpointState.decode(saved).encode(), saved)


def test_a_checkpoint_without_oracle_choices_still_loads(tmp_path):
    saved = written_after(tmp_path, 3)
    del saved["oracle_choice"]
    assert CheckpointState.decode(saved).oracle_choice == {}


def test_a_checkpoint_of_another_format_is_refused(tmp_path):
    saved = written_after(tmp_path, 1)
    saved["version"] = 2
    with pytest.raises(CheckpointMismatchError, match="checkpoint format 2 is not 1"):
        CheckpointState.decode(saved)


def test_a_shared_dense_training_is_a_checkpoint_with_its_events(tmp_path):
    cache = LocalDenseCache(tmp_path)
    spec = small_spec()
    PruningEngine(spec, dense_cache=cache).run()
    saved = torch.load(cache.path(spec.dense_identity()), weights_only=True)
    assert list(saved) == [*CHECKPOINT_KEYS, "events"]
    assert saved["identity"] == spec.dense_identity()
    assert [(e["cycle"], e["epoch"]) for e in saved["events"]] == [(0, 1), (0, 2)]
    assert same(cache.load(spec.dense_identity()).encode(), saved)
