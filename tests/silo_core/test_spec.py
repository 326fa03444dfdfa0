"""The JobSpec: precise errors for each kind of mistake, YAML/JSON loading, identity."""

import json
import subprocess
import sys

import pytest

from silo_core.spec import JobSpec, SpecError, load_spec, parse_spec

BASE = {
    "model": {"name": "mlp"},
    "dataset": {"name": "digits"},
    "pruning": {"fraction": 0.2, "cycles": 3},
    "schedule": {"name": "silo"},
}


def with_(path: str, value):
    data = json.loads(json.dumps(BASE))
    node = data
    *parents, last = path.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return data


def problems(data) -> list[str]:
    with pytest.raises(SpecError) as info:
        parse_spec(data)
    return info.value.problems


def test_minimal_spec_fills_defaults():
    spec = parse_spec(BASE)
    assert spec.schedule.name == "silo"
    assert spec.schedule.resolved() == {"alpha": 0.04, "offset": 0.03, "beta": 5.0, "delay": 1}
    assert spec.training.dense_epochs == spec.training.epochs_per_cycle
    assert spec.pruning.retraining == "lr_rewind"


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("model.name", "resnet99", "model.name: unknown model 'resnet99'; allowed: lenet5, mlp,"),
        ("dataset.name", "mnist", "dataset.name: unknown dataset 'mnist'; allowed: cifar10,"),
        ("pruning.fraction", 1.0, "pruning.fraction: Input should be less than 1 (got 1.0)"),
        ("pruning.fraction", 0, "pruning.fraction: Input should be greater than 0 (got 0)"),
        (
            "pruning.method",
            "movement",
            "pruning.method: unknown pruning method 'movement'; "
            "allowed: global_magnitude, layerwise_magnitude, random",
        ),
        ("schedule.alpha", -1, "schedule.alpha: Input should be greater than or equal to 0"),
        ("schedule.beta", 0, "schedule.beta: Input should be greater than 0 (got 0)"),
        ("schedule.preset", "vgg11", "schedule.preset: Input should be 'resnet20' or 'vgg19'"),
        ("schedule.milestones", [0.8, 1.5], "schedule.milestones.1: Input should be less than 1"),
        ("seed", 2**31, "seed: Input should be less than or equal to 2147483647"),
        ("dataset.split_seed", 2**31, "dataset.split_seed: Input should be less than or equal"),
        (
            "schedule.name",
            "cosine",
            "schedule: Input tag 'cosine' found using 'name' does not "
            "match any of the expected tags: 'silo', 'lr_rewind', 'fine_tune', 'slr', 'clr', "
            "'constant'",
        ),
        (
            "training.epochs_per_cycle",
            0,
            "training.epochs_per_cycle: Input should be greater than or equal to 1 (got 0)",
        ),
        ("training.batch_size", "big", "training.batch_size: Input should be a valid integer"),
        ("optimizer.name", "lion", "optimizer.name: Input should be 'sgd' or 'adamw'"),
        ("device", "tpu", "device: String should match pattern"),
        ("seed", -3, "seed: Input should be greater than or equal to 0 (got -3)"),
        ("pruning.colour", "red", "pruning.colour: Extra inputs are not permitted"),
    ],
)
def test_each_mistake_names_its_field_and_the_allowed_values(path, value, expected):
    found = problems(with_(path, value))
    assert any(line.startswith(expected) for line in found), found


def test_milestones_are_kept_in_order_whatever_order_they_come_in():
    """Each milestone decays the learning rate once, as torch's MultiStepLR reads them."""
    spec = parse_spec(with_("schedule.milestones", [0.8, 0.5]))
    assert spec.schedule.milestones == (0.5, 0.8)
    assert spec.identity() == parse_spec(with_("schedule.milestones", [0.5, 0.8])).identity()


def test_missing_required_sections_are_named():
    found = problems({"model": {"name": "mlp"}})
    assert "pruning: Field required" in found
    assert "schedule: Field required" in found


def test_budget_needs_cycles_or_target():
    found = problems(with_("pruning", {"fraction": 0.2}))
    assert found == ["pruning: give cycles, target_sparsity, or both"]


def test_rewind_epoch_must_lie_inside_dense_training():
    data = with_("pruning", {"cycles": 2, "retraining": "weight_rewind", "rewind_epoch": 50})
    data["training"] = {"epochs_per_cycle": 5}
    assert problems(data) == [
        "spec: pruning.rewind_epoch (50) must be <= the dense training's epochs (5)"
    ]


def test_rewind_epoch_without_weight_rewind_is_refused():
    found = problems(with_("pruning", {"cycles": 2, "rewind_epoch": 1}))
    assert found == ["pruning: rewind_epoch applies only with retraining: weight_rewind"]


@pytest.mark.parametrize(
    ("fraction", "target", "cycles", "expected"),
    [
        (0.2, 0.95, None, 14),
        (0.2, 0.5, None, 4),
        (0.5, 0.75, None, 2),
        (0.2, 0.99, 5, 5),
        (0.2, None, 7, 7),
        (0.2, 0.36, 10, 2),
    ],
)
def test_planned_cycles_reach_the_target_first(fraction, target, cycles, expected):
    spec = parse_spec(
        with_("pruning", {"fraction": fraction, "target_sparsity": target, "cycles": cycles})
    )
    planned = spec.pruning.planned_cycles()
    assert planned == expected
    if target is not None and cycles is None:
        assert 1 - (1 - fraction) ** planned >= target > 1 - (1 - fraction) ** (planned - 1)


def test_yaml_and_json_files_load_the_same_spec(tmp_path):
    yaml_file = tmp_path / "job.yaml"
    yaml_file.write_text(
        "model: {name: mlp}\npruning: {cycles: 3}\nschedule: {name: silo, alpha: 0.1}\n"
    )
    json_file = tmp_path / "job.json"
    json_file.write_text(
        json.dumps(
            {
                "model": {"name": "mlp"},
                "pruning": {"cycles": 3},
                "schedule": {"alpha": 0.1, "name": "silo"},
            }
        )
    )
    assert load_spec(yaml_file) == load_spec(json_file)


def test_unreadable_and_malformed_files_say_so(tmp_path):
    with pytest.raises(SpecError, match="cannot read the spec file"):
        load_spec(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(bad)
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n- 2\n")
    with pytest.raises(SpecError, match="expected a mapping of fields, got list"):
        load_spec(listed)


def test_identity_ignores_spelled_out_defaults_and_key_order():
    a = parse_spec(BASE)
    b = parse_spec({**with_("optimizer", {"name": "sgd", "momentum": 0.9}), "seed": 0})
    c = parse_spec(with_("seed", 1))
    assert a.identity() == b.identity()
    assert a.identity() != c.identity()


def test_json_schema_lists_allowed_values():
    schema = JobSpec.model_json_schema()
    model_name = schema["$defs"]["ModelSpec"]["properties"]["name"]
    assert "resnet20" in model_name["enum"]
    assert schema["properties"]["schedule"]["discriminator"]["propertyName"] == "name"
    assert schema["$defs"]["PruningSpec"]["properties"]["fraction"]["exclusiveMaximum"] == 1.0


def test_reading_a_spec_and_starting_the_cli_do_not_load_torch():
    # torch takes seconds to import and a GB of memory; the CLI and the API read specs only.
    code = (
        "import sys, server.app, server.cli, silo_core.spec as s; "
        f"s.parse_spec({BASE!r}); "
        "print(sorted(m for m in ('torch', 'torchvision') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
