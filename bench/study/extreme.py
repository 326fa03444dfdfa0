"""digits-extreme: where the learning-rate schedule has something to recover.

LeNet-5 and the MLP on digits, pruned 20% per cycle past the sparsity where
their accuracy falls (measured with 8 epochs per cycle: the MLP keeps about
93% up to 99.5% and ends near 55% at 99.9%; LeNet-5 keeps about 94% up to 98%
and is near chance by 99.8%). The validation split is 30% of the non-test
images (431 of them, one image 0.23%) with the split seed fixed, so every seed
and schedule is validated and tested on the same images. Tuning is
reproduce.py's (study.runs.tune); the Oracle searches a grid of 11 peaks a
quarter decade apart, 0.001 to 0.32, every cycle.

The measurements (per label and seed, per cycle: test accuracy at the best
validation epoch and max_lr; per Oracle cycle and seed, the validation
accuracy of every grid peak) are written to ``digits-extreme.json``; the
report (study.extreme_report) is rendered from that file alone, so
``--from-results`` renders it again without running anything.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from study.runs import ORACLE, PAPER_SILO, UNTUNED, Run, run_all, tune

SETTING = "digits-extreme"
PRESET = "digits-silo"
# model -> target sparsity: past the point where its accuracy falls (see above)
MODELS = {"lenet5": 0.998, "mlp": 0.999}
VAL_FRACTION = 0.3
EPOCHS_PER_CYCLE = 8  # not the preset's 10: the study must fit an hour on 2 busy CPUs
SPLIT_SEED = 0
ORACLE_GRID = [float(f"{10 ** (-3 + k / 4):.2g}") for k in range(11)]  # 0.001 .. 0.32
DEFAULT_SEEDS = ",".join(str(seed) for seed in range(10))


def base_spec(model: str, target: float, epochs: int | None, device: str) -> dict[str, Any]:
    from silo_core.presets import load_preset

    base = load_preset(PRESET).model_dump(mode="json", exclude_none=True)
    pruning = {k: v for k, v in base["pruning"].items() if k != "cycles"}
    base["model"] = {"name": model}
    base["dataset"] = {**base["dataset"], "val_fraction": VAL_FRACTION, "split_seed": SPLIT_SEED}
    base["pruning"] = {**pruning, "target_sparsity": target}
    base["training"] = {**base["training"], "epochs_per_cycle": epochs or EPOCHS_PER_CYCLE}
    base["device"] = device
    return base


def split_sizes() -> dict[str, int]:
    """How many images each split holds (they are the same for every seed)."""
    import torch

    from silo_core.data.registry import load_dataset

    splits = load_dataset(
        "digits", device=torch.device("cpu"), val_fraction=VAL_FRACTION, split_seed=SPLIT_SEED
    )
    return {name: getattr(splits, name).num_examples for name in ("train", "val", "test")}


def measurements(
    plan: dict[str, dict[str, Any]],
    seeds: Sequence[int],
    results: dict[Run, list[dict[str, Any]]],
) -> dict[str, Any]:
    """What the report reads, per label as [seed][cycle] (seeds in ``seeds`` order)."""
    tables = {
        label: [results[Run.of(label, schedule, seed)] for seed in seeds]
        for label, schedule in plan.items()
    }
    cycles = min(len(table) for per_seed in tables.values() for table in per_seed)
    searched = [[row["extras"]["oracle"] for row in table[1:cycles]] for table in tables["oracle"]]
    grids = {tuple(cycle["grid"]) for per_seed in searched for cycle in per_seed}
    if len(grids) != 1:
        raise ValueError(f"the Oracle searched more than one grid: {sorted(grids)}")
    return {
        "schedules": plan,
        "sparsity": [row["sparsity"] for row in tables["silo"][0][:cycles]],
        "test": {
            label: [[row["test_accuracy_at_best_val"] for row in t[:cycles]] for t in per_seed]
            for label, per_seed in tables.items()
        },
        "max_lr": {
            label: [[row["max_lr"] for row in t[:cycles]] for t in per_seed]
            for label, per_seed in tables.items()
        },
        "oracle": {
            "grid": list(grids.pop()),
            "val": [[cycle["best_val_accuracy"] for cycle in per_seed] for per_seed in searched],
        },
    }


def study_model(
    model: str,
    base: dict[str, Any],
    seeds: Sequence[int],
    tune_seeds: Sequence[int] | None,
    workers: int,
    console: Console,
) -> dict[str, Any]:
    console.print(f"[bold]{model}[/bold] to {base['pruning']['target_sparsity']:.2%} sparsity")
    started = time.perf_counter()
    chosen = UNTUNED if tune_seeds is None else tune(base, tune_seeds, workers, console)
    oracle = {**ORACLE, "grid": ORACLE_GRID}
    plan = {**chosen, "silo (paper)": PAPER_SILO, "oracle": oracle}
    # The Oracle's jobs are the longest: first, so that no worker waits on one at the end.
    order = ["oracle", *(label for label in plan if label != "oracle")]
    runs = [Run.of(label, plan[label], seed) for label in order for seed in seeds]
    console.print(f"report: {len(runs)} jobs on seeds {list(seeds)}")
    results = run_all(base, runs, workers, console)
    return {
        "model": model,
        "target_sparsity": base["pruning"]["target_sparsity"],
        "chosen": chosen,
        "seconds": time.perf_counter() - started,
        **measurements(plan, seeds, results),
    }


def run(
    *,
    models: Sequence[str],
    seeds: Sequence[int],
    tune_seeds: Sequence[int] | None,
    workers: int,
    device: str,
    epochs: int | None,
    target_sparsity: float | None,
    command: str,
    console: Console,
) -> dict[str, Any]:
    """Every model's study; the whole as the results file holds it."""
    started = time.perf_counter()
    bases = {m: base_spec(m, target_sparsity or MODELS[m], epochs, device) for m in models}
    first = bases[models[0]]
    studies = {m: study_model(m, bases[m], seeds, tune_seeds, workers, console) for m in models}
    return {
        "setting": SETTING,
        "command": command,
        "seconds": time.perf_counter() - started,
        "cpus": os.cpu_count(),
        "workers": workers,
        "seeds": list(seeds),
        "tune_seeds": list(tune_seeds) if tune_seeds is not None else None,
        "split": {"val_fraction": VAL_FRACTION, "split_seed": SPLIT_SEED, **split_sizes()},
        "training": first["training"],
        "pruning_fraction": first["pruning"]["fraction"],
        "models": studies,
    }


def dumps(results: dict[str, Any]) -> str:
    """Indented JSON with every list of numbers on one line."""
    text = json.dumps(results, indent=1)

    def one_line(match: re.Match[str]) -> str:
        return "[" + " ".join(match.group()[1:-1].split()) + "]"

    return re.sub(r"\[[-+0-9.e,\s]*\]", one_line, text)


def write(results: dict[str, Any], out: Path, console: Console) -> None:
    """The report, one figure per model, and (kept as it is) the results file."""
    from study.extreme_report import markdown, plot

    out.mkdir(parents=True, exist_ok=True)
    data = out / f"{SETTING}.json"
    if not data.exists() or json.loads(data.read_text()) != results:
        data.write_text(dumps(results) + "\n")
    figures = {}
    for model, study in results["models"].items():
        figures[model] = f"{SETTING}-{model}.png"
        plot(study, out / figures[model])
    (out / f"{SETTING}.md").write_text(markdown(results, figures))
    console.print(f"wrote {out / f'{SETTING}.md'}, {', '.join(figures.values())} and {data.name}")
