"""Starting weights: safetensors and weights-only state dicts load, anything else is
refused without running it, and weights that do not fit fail before any training."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from test_engine import Recorder, small_spec
from typer.testing import CliRunner

from silo_core.cli import app
from silo_core.data import load_dataset
from silo_core.engine import JobResult, LocalDenseCache, PruningEngine
from silo_core.engine.device_plan import plan_for
from silo_core.engine.training import evaluate
from silo_core.models import build_model
from silo_core.spec import SpecError, parse_spec
from silo_core.weights import WeightsError, load_weights, read_weights


class Payload:
    """Unpickling this creates the marker file: the code a malicious pickle runs."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def malicious_pickle(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "payload-ran"
    path = tmp_path / "weights.pt"
    torch.save({"fc.weight": torch.zeros(2), "payload": Payload(marker)}, path)
    return path, marker


def trained_mlp() -> tuple[dict[str, torch.Tensor], float]:
    """A digits MLP trained (and pruned once) by the engine, and its test accuracy."""
    result = PruningEngine(small_spec(pruning={"cycles": 1})).run()
    return result.model_state, result.cycles[-1].final_test_accuracy


def test_a_pickle_that_would_run_code_is_refused_and_runs_nothing(tmp_path):
    path, marker = malicious_pickle(tmp_path)
    with pytest.raises(WeightsError, match="refused: neither a safetensors file nor"):
        read_weights(path)
    assert not marker.exists()
    # The same pickle without torch's zip container: refused alike.
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(WeightsError, match="refused"):
        read_weights(plain)
    assert not marker.exists()


def test_weights_that_do_not_fit_name_the_first_mismatches(tmp_path):
    model = build_model("mlp", in_channels=1, num_classes=10, image_size=8)
    state = model.state_dict()
    name, first = next(iter(state.items()))
    state[name] = torch.zeros(first.shape[0] + 1, *first.shape[1:])
    state["extra.weight"] = torch.zeros(1)
    last = list(state)[-2]
    del state[last]
    with pytest.raises(WeightsError) as caught:
        path = tmp_path / "weights.safetensors"
        save_file(state, path)
        load_weights(model, path)
    message = str(caught.value)
    assert f"missing key {last!r}" in message
    assert "unexpected key 'extra.weight'" in message
    assert f"{name!r}: shape ({first.shape[0] + 1}," in message and "in the model" in message


def test_epochs_zero_needs_weights_and_evaluates_them_without_training(tmp_path):
    with pytest.raises(SpecError, match=r"training\.dense\.epochs: 0 .* set model\.weights"):
        small_spec(training={"dense": {"epochs": 0}})
    state, accuracy = trained_mlp()
    path = tmp_path / "dense.safetensors"
    save_file(state, path)
    spec = small_spec(
        model={"name": "mlp", "weights": str(path)},
        training={"epochs_per_cycle": 1, "batch_size": 64, "dense": {"epochs": 0}},
        pruning={"cycles": 1},
    )
    recorder = Recorder()
    engine = PruningEngine(spec, reporter=recorder, weights=path)
    result = engine.run()
    dense = result.cycles[0]
    assert dense.best_epoch == 0
    assert dense.sparsity == pytest.approx(0.2, abs=1e-3)  # the given network's own (pruned once)
    assert [e.cycle for e in recorder.events] == [1]  # cycle 0 trained no epoch
    # Evaluated directly: the same network on the same test split.
    model = build_model("mlp", in_channels=1, num_classes=10, image_size=8)
    model.load_state_dict(state)
    data = load_dataset("digits", device=torch.device("cpu"))
    plan = plan_for(spec.training, torch.device("cpu"), model)
    _, direct = evaluate(model, data.test.batches(512, shuffle=False, augment=False, seed=0), plan)
    assert dense.final_test_accuracy == pytest.approx(direct, abs=1e-9)
    assert dense.final_test_accuracy == pytest.approx(accuracy, abs=1e-9)


def prune_once_from(path: Path) -> JobResult:
    """One cycle at fraction 0.5 from the weights at ``path``, cycle 0 untrained."""
    spec = small_spec(
        model={"name": "mlp", "weights": str(path)},
        pruning={"fraction": 0.5, "cycles": 1},
        training={"epochs_per_cycle": 1, "batch_size": 64, "dense": {"epochs": 0}},
    )
    return PruningEngine(spec, weights=path).run()


def test_a_pruned_network_keeps_its_pruning_and_is_pruned_further(tmp_path):
    """A pruned job's model.pt (a state dict with zeros) starts the next job at
    its sparsity: its zeros are masks, so they stay zero, and cycles go on."""
    first = PruningEngine(small_spec(pruning={"fraction": 0.5, "cycles": 1})).run()
    path = tmp_path / "model.pt"
    torch.save(first.model_state, path)
    result = prune_once_from(path)
    assert [round(c.sparsity, 3) for c in result.cycles] == [0.5, 0.75]
    for name, alive in first.masks.items():
        assert not result.masks[name][~alive].any(), name  # pruned before: still pruned
        assert not result.model_state[name][~alive].any(), name  # and still zero


def test_a_dense_network_from_weights_starts_with_every_weight_alive(tmp_path):
    path = tmp_path / "dense.pt"
    torch.save(build_model("mlp", in_channels=1, num_classes=10, image_size=8).state_dict(), path)
    result = prune_once_from(path)
    assert [round(c.sparsity, 3) for c in result.cycles] == [0.0, 0.5]


def test_silo_run_reads_a_local_weights_path_and_refuses_a_service_reference(tmp_path):
    state, _ = trained_mlp()
    path = tmp_path / "dense.pt"
    torch.save(state, path)
    text = f"""\
model: {{name: mlp, weights: {path}}}
dataset: {{name: digits}}
pruning: {{fraction: 0.5, cycles: 1}}
schedule: {{name: silo}}
training: {{epochs_per_cycle: 1, batch_size: 128, dense: {{epochs: 0}}}}
device: cpu
"""
    spec_file = tmp_path / "job.yaml"
    spec_file.write_text(text)
    runner = CliRunner()
    done = runner.invoke(app, ["run", str(spec_file), "--out", str(tmp_path / "out")])
    assert done.exit_code == 0, done.output
    assert (tmp_path / "out" / "model.pt").exists()
    spec_file.write_text(text.replace(str(path), "file:3"))
    refused = runner.invoke(app, ["run", str(spec_file), "--out", str(tmp_path / "out2")])
    assert refused.exit_code == 1
    assert "names a file of the service" in refused.output


def test_a_malicious_pickle_fails_silo_run_and_its_payload_never_runs(tmp_path):
    path, marker = malicious_pickle(tmp_path)
    spec = parse_spec(
        {
            "model": {"name": "mlp", "weights": str(path)},
            "pruning": {"cycles": 1},
            "schedule": {"name": "silo"},
            "training": {"epochs_per_cycle": 1, "dense": {"epochs": 0}},
            "device": "cpu",
        }
    )
    with pytest.raises(WeightsError, match="refused"):
        PruningEngine(spec, weights=path).run()
    assert not marker.exists()


def test_jobs_starting_from_the_same_weights_share_cycle_0_and_others_do_not(tmp_path):
    state, _ = trained_mlp()
    first, second = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    save_file(state, first)
    save_file({k: v * 0.5 for k, v in state.items()}, second)
    cache = LocalDenseCache(tmp_path / "dense")

    def run(weights: Path, schedule: str):
        spec = small_spec(
            model={"name": "mlp", "weights": str(weights)},
            schedule={"name": schedule},
            training={"epochs_per_cycle": 1, "batch_size": 64, "dense": {"epochs": 0}},
            pruning={"cycles": 1},
        )
        engine = PruningEngine(spec, dense_cache=cache, weights=weights)
        return engine, engine.run()

    made, result = run(first, "silo")
    assert made.start.source == "scratch"
    shared, again = run(first, "lr_rewind")
    assert shared.start.source == "shared dense"
    assert again.cycles[0].to_dict() == result.cycles[0].to_dict()
    other, _ = run(second, "lr_rewind")
    assert other.start.source == "scratch"  # other weights: another dense identity
