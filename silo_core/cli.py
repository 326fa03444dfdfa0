"""The ``silo`` command: run pruning jobs locally, inspect presets and the spec."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from silo_core.spec import JobSpec, SpecError, load_spec

app = typer.Typer(
    name="silo",
    help="Iterative magnitude pruning with SILO and its baselines.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True, soft_wrap=True)


def _fail(lines: list[str], code: int = 2) -> typer.Exit:
    """Print one ``error:`` line per problem and return the exit to raise."""
    for line in lines:
        err.print(f"error: {line}", markup=False, highlight=False)
    return typer.Exit(code)


def _resolve_spec(spec_file: Path | None, preset: str | None) -> JobSpec:
    from silo_core.presets import load_preset

    if (spec_file is None) == (preset is None):
        raise _fail(["give a spec file or --preset NAME (one of them)"])
    try:
        return load_spec(spec_file) if spec_file else load_preset(str(preset))
    except SpecError as exc:
        raise _fail(exc.problems) from None
    except ValueError as exc:
        raise _fail([str(exc)]) from None


@app.command()
def run(
    spec_file: Annotated[Path | None, typer.Argument(help="Job spec, YAML or JSON")] = None,
    preset: Annotated[str | None, typer.Option(help="A shipped preset instead of a file")] = None,
    out: Annotated[
        Path | None, typer.Option(help="Output folder (default: silo-runs/<name>-<spec hash>)")
    ] = None,
    fresh: Annotated[
        bool, typer.Option(help="Ignore a checkpoint left in the output folder")
    ] = False,
) -> None:
    """Run one pruning job here, with a progress bar; print and save its cycle table."""
    from silo_core.local_run import run_locally

    spec = _resolve_spec(spec_file, preset)
    name = preset or (spec_file.stem if spec_file else "job")
    out = out or Path("silo-runs") / f"{name}-{spec.identity()}"
    try:
        run_locally(spec, out, fresh=fresh)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        raise _fail([str(exc)], code=1) from None


@app.command()
def presets() -> None:
    """List the shipped presets."""
    from silo_core.presets import load_preset, preset_names

    for name in preset_names():
        spec = load_preset(name)
        typer.echo(
            f"{name:24} {spec.model.name:9} {spec.dataset.name:8} {spec.schedule.name:10} "
            f"{spec.pruning.planned_cycles()} cycles"
        )


@app.command()
def validate(spec_file: Annotated[Path, typer.Argument(help="Job spec, YAML or JSON")]) -> None:
    """Check a spec without running it; print its normalised form."""
    spec = _resolve_spec(spec_file, None)
    typer.echo(json.dumps(spec.model_dump(mode="json"), indent=2))


@app.command()
def schema() -> None:
    """Print the JobSpec's JSON schema."""
    typer.echo(json.dumps(JobSpec.model_json_schema(), indent=2))


def main() -> None:
    app()
