"""``silo run``/``validate``: bad specs give precise errors and exit 2; runs write outputs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from silo_core.cli import app

runner = CliRunner()

SMALL = """\
model: {name: mlp}
dataset: {name: digits}
pruning: {fraction: 0.5, cycles: 2}
schedule: {name: silo}
training: {epochs_per_cycle: 1, batch_size: 128, dense: {epochs: 2}}
device: cpu
"""


def write(tmp_path: Path, text: str, name: str = "job.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (SMALL.replace("mlp", "resnet99"), "error: model.name: unknown model 'resnet99'; allowed:"),
        (SMALL.replace("0.5", "1.5"), "error: pruning.fraction: Input should be less than 1"),
        (
            SMALL.replace("name: silo", "name: silo, beta: -1"),
            "error: schedule.beta: Input should be greater than 0 (got -1)",
        ),
        (SMALL + "colour: red\n", "error: colour: Extra inputs are not permitted"),
        ("model: [\n", "not valid YAML"),
    ],
)
def test_bad_spec_names_the_field_and_exits_2(tmp_path, text, expected):
    for command in ("run", "validate"):
        result = runner.invoke(app, [command, str(write(tmp_path, text))])
        assert result.exit_code == 2, result.output
        assert expected in result.output
        assert "Traceback" not in result.output


def test_spec_file_and_preset_are_exclusive(tmp_path):
    result = runner.invoke(app, ["run", str(write(tmp_path, SMALL)), "--preset", "digits-silo"])
    assert result.exit_code == 2
    assert "give a spec file or --preset NAME" in result.output
    result = runner.invoke(app, ["run", "--preset", "nope"])
    assert result.exit_code == 2
    assert "unknown preset 'nope'; allowed: digits-lr-rewind, digits-silo" in result.output


def test_missing_dataset_folder_is_one_clear_line(tmp_path):
    text = SMALL.replace("dataset: {name: digits}", f"dataset: {{name: cifar10, root: {tmp_path}}}")
    result = runner.invoke(app, ["run", str(write(tmp_path, text)), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1
    assert "error:" in result.output and "cifar-10-batches-py" in result.output
    assert "Traceback" not in result.output


def test_presets_all_validate_and_list():
    result = runner.invoke(app, ["presets"])
    assert result.exit_code == 0
    for name in ("digits-silo", "digits-lr-rewind", "resnet20-cifar10-silo", "vgg19-cifar10-silo"):
        assert name in result.output


def test_schema_is_json_with_the_spec_fields():
    result = runner.invoke(app, ["schema"])
    schema = json.loads(result.output)
    assert set(schema["required"]) == {"model", "pruning", "schedule"}


def test_installed_silo_runs_a_job_and_writes_its_outputs(tmp_path):
    silo = Path(sys.executable).with_name("silo")
    out = tmp_path / "out"
    proc = subprocess.run(
        [str(silo), "run", str(write(tmp_path, SMALL)), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "sparsity" in proc.stdout and "75.00%" in proc.stdout
    rows = json.loads((out / "cycles.json").read_text())
    assert [r["cycle"] for r in rows] == [0, 1, 2]
    assert (out / "cycles.csv").read_text().splitlines()[0].startswith("cycle,sparsity,")
    weights = torch.load(out / "model.pt", weights_only=True)
    masks = torch.load(out / "masks.pt", weights_only=True)
    for name, mask in masks.items():
        assert bool((weights[name][~mask] == 0).all()), name
    assert sum(int((~m).sum()) for m in masks.values()) / sum(
        m.numel() for m in masks.values()
    ) == pytest.approx(0.75, abs=1e-3)


def test_silo_run_shows_an_oracle_search_on_the_epoch_bar(tmp_path, monkeypatch):
    from rich.console import Console

    from silo_core import local_run
    from silo_core.spec import parse_spec

    spec = parse_spec(
        {
            "model": {"name": "mlp"},
            "dataset": {"name": "digits"},
            "pruning": {"fraction": 0.5, "cycles": 1},
            "schedule": {"name": "oracle", "grid": [0.01, 0.1]},
            "training": {"epochs_per_cycle": 2, "dense": {"epochs": 1}},
            "device": "cpu",
        }
    )
    shown: list[str] = []  # the epoch bar's status right after each note
    take_note = local_run.ProgressReporter.on_note

    def spy(self, note):
        take_note(self, note)
        if note:
            shown.append(self.progress.tasks[1].fields["status"])

    monkeypatch.setattr(local_run.ProgressReporter, "on_note", spy)
    with open(os.devnull, "w") as quiet:
        local_run.run_locally(spec, tmp_path / "out", console=Console(file=quiet))
    assert len(shown) == 4  # 2 trials x 2 epochs
    assert shown[-1].startswith("Oracle search: 4/4 trial epochs, best so far max_lr")
