"""Running a job in this process with a live progress display (``silo run``)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import torch
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from silo_core.engine import (
    CYCLE_COLUMNS,
    CycleResult,
    EpochEvent,
    JobResult,
    LocalCheckpointStore,
    PruningEngine,
)
from silo_core.export import (
    FORMAT_VERSION,
    MASKS_FILE,
    MODEL_FILE,
    SIZES_FILE,
    metadata_for,
    save_tensors,
    weight_sizes,
)
from silo_core.spec import JobSpec
from silo_core.tables import cycle_table, sizes_table
from silo_core.weights import local_weights


class ProgressReporter:
    """Two bars: cycles of the job and epochs of the current cycle."""

    def __init__(self, progress: Progress, cycles: int) -> None:
        self.progress = progress
        self.cycle_task = progress.add_task("cycles", total=cycles + 1, status="")
        self.epoch_task = progress.add_task("epochs", total=1, status="")

    def on_epoch(self, event: EpochEvent) -> None:
        self.progress.update(
            self.epoch_task,
            description=f"cycle {event.cycle}/{event.cycles}",
            completed=event.epoch,
            total=event.epochs,
            status=(
                f"lr {event.lr:.3g} val {event.val_accuracy:.1%} sparsity {event.sparsity:.1%}"
            ),
        )

    def on_cycle(self, result: CycleResult) -> None:
        self.progress.update(self.cycle_task, completed=result.cycle + 1)

    def on_note(self, note: str | None) -> None:
        """The Oracle's search: shown on the epoch bar until its epochs come."""
        if note:
            self.progress.update(self.epoch_task, status=note)


def write_outputs(result: JobResult, spec: JobSpec, out: Path) -> dict[str, Any]:
    """cycles.csv, cycles.json, model.pt (weights with zeros), masks.pt, the same
    two in safetensors, spec.yaml, and sizes.json (what each takes on disk,
    which it returns)."""
    out.mkdir(parents=True, exist_ok=True)
    rows = [c.to_dict() for c in result.cycles]
    with (out / "cycles.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(CYCLE_COLUMNS), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    (out / "cycles.json").write_text(json.dumps(rows, indent=2))
    torch.save(result.model_state, out / "model.pt")
    torch.save(result.masks, out / "masks.pt")
    sparsity = result.cycles[-1].sparsity if result.cycles else 0.0
    metadata = metadata_for(spec, result.info, sparsity)
    save_tensors(result.model_state, out / MODEL_FILE, metadata)
    save_tensors(result.masks, out / MASKS_FILE, metadata)
    (out / "spec.yaml").write_text(yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False))
    written = ("cycles.csv", "cycles.json", "model.pt", "masks.pt", MODEL_FILE, MASKS_FILE)
    sizes = {
        "format_version": FORMAT_VERSION,
        "files": {name: (out / name).stat().st_size for name in (*written, "spec.yaml")},
        "weights": weight_sizes(result.model_state, result.masks),
    }
    (out / SIZES_FILE).write_text(json.dumps(sizes, indent=2))
    return sizes


def run_locally(
    spec: JobSpec, out: Path, *, fresh: bool = False, console: Console | None = None
) -> JobResult:
    console = console or Console()
    store = LocalCheckpointStore(out / "checkpoints")
    if fresh:
        store.latest_path.unlink(missing_ok=True)
    columns = (
        TextColumn("{task.description:>11}"),
        BarColumn(bar_width=20),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        planned = spec.pruning.planned_cycles()
        reporter = ProgressReporter(progress, planned)
        engine = PruningEngine(
            spec, reporter=reporter, store=store, weights=local_weights(spec.model.weights)
        )
        resumed = store.latest_path.exists()
        if resumed:
            console.print(f"resuming from {store.latest_path}")
        result = engine.run()
    sizes = write_outputs(result, spec, out)
    title = (
        f"{spec.model.name} on {spec.dataset.name}, {spec.schedule.name}, "
        f"{spec.pruning.method} p={spec.pruning.fraction}"
    )
    console.print(cycle_table(result.cycles, title))
    console.print(sizes_table(sizes))
    console.print(f"outputs in {out}")
    return result
