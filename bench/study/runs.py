"""The schedules, their honest tuning, and jobs run side by side.

Every schedule with a knob is tuned the same way: on tuning seeds that are not
reported, each candidate runs once per seed and the one with the highest mean
validation accuracy over the pruning cycles wins. A job is one PruningEngine
run in a worker process with one torch thread; its result is its cycle table
(``CycleResult.to_dict()`` per cycle).
"""

from __future__ import annotations

import itertools
import json
import multiprocessing
import statistics
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

from rich.console import Console

PEAKS = (0.01, 0.03, 0.1, 0.3)  # the baselines' max_lr candidates
CANDIDATES: dict[str, list[dict[str, Any]]] = {
    "silo": [
        {"name": "silo", "alpha": alpha, "offset": offset}
        for alpha, offset in itertools.product((0.04, 0.1, 0.2), (0.01, 0.03, 0.1))
    ],
    "lr_rewind": [{"name": "lr_rewind", "max_lr": lr} for lr in PEAKS],
    "slr": [{"name": "slr", "max_lr": lr} for lr in PEAKS],
    "clr": [{"name": "clr", "max_lr": lr} for lr in PEAKS],
    "fine_tune": [{"name": "fine_tune", "max_lr": lr} for lr in (1e-3, 3e-3, 1e-2, 3e-2)],
}
UNTUNED: dict[str, dict[str, Any]] = {
    "silo": {"name": "silo"},
    "lr_rewind": {"name": "lr_rewind"},
    "slr": {"name": "slr"},
    "clr": {"name": "clr"},
    "fine_tune": {"name": "fine_tune"},
}
PAPER_SILO = {"name": "silo", "preset": "resnet20"}
ORACLE = {"name": "oracle"}


@dataclass(frozen=True)
class Run:
    label: str
    schedule_json: str  # JSON, so that a run can be a dictionary key
    seed: int

    @classmethod
    def of(cls, label: str, schedule: dict[str, Any], seed: int) -> Run:
        return cls(label, json.dumps(schedule, sort_keys=True), seed)

    @property
    def schedule(self) -> dict[str, Any]:
        return json.loads(self.schedule_json)


def run_job(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """One job in this worker process; its cycle table."""
    import torch

    from silo_core.engine.runner import PruningEngine
    from silo_core.spec import parse_spec

    torch.set_num_threads(1)  # one job per core
    return [row.to_dict() for row in PruningEngine(parse_spec(spec)).run().cycles]


def member_spec(base: dict[str, Any], schedule: dict[str, Any], seed: int) -> dict[str, Any]:
    if schedule["name"] == "silo" and "preset" not in schedule:
        schedule = {"preset": base["schedule"].get("preset", "resnet20"), **schedule}
    return {**base, "schedule": schedule, "seed": seed}


def run_all(
    base: dict[str, Any], runs: Sequence[Run], workers: int, console: Console
) -> dict[Run, list[dict[str, Any]]]:
    specs = [member_spec(base, run.schedule, run.seed) for run in runs]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        results = {}
        for done, (run, cycles) in enumerate(zip(runs, pool.map(run_job, specs), strict=True), 1):
            results[run] = cycles
            console.print(f"  {done}/{len(runs)} {run.label} seed {run.seed}", highlight=False)
    return results


def tune(
    base: dict[str, Any], seeds: Sequence[int], workers: int, console: Console
) -> dict[str, dict[str, Any]]:
    """Each schedule's candidate with the best mean validation accuracy over the
    pruning cycles and the tuning seeds."""
    runs = [
        Run.of(name, candidate, seed)
        for name, candidates in CANDIDATES.items()
        for candidate in candidates
        for seed in seeds
    ]
    console.print(f"tuning: {len(runs)} jobs on seeds {list(seeds)} (validation accuracy only)")
    results = run_all(base, runs, workers, console)
    chosen = {}
    for name, candidates in CANDIDATES.items():

        def score(candidate: dict[str, Any], name: str = name) -> float:
            return statistics.mean(
                row["best_val_accuracy"]
                for seed in seeds
                for row in results[Run.of(name, candidate, seed)][1:]
            )

        chosen[name] = max(candidates, key=score)
        console.print(f"  {name}: {knobs(chosen[name])} (val {score(chosen[name]):.4f})")
    return chosen


def knobs(schedule: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:g}" for k, v in schedule.items() if isinstance(v, float)) or "-"


def summarise(
    results: dict[Run, list[dict[str, Any]]], labels: Sequence[str]
) -> list[dict[str, Any]]:
    """Per cycle: sparsity and each label's test accuracy (mean, std, n) and max_lr."""
    by_label: dict[str, list[list[dict[str, Any]]]] = {label: [] for label in labels}
    for run, cycles in results.items():
        by_label[run.label].append(cycles)
    rows = []
    cycles = min(len(tables[0]) for tables in by_label.values())
    for cycle in range(cycles):
        row: dict[str, Any] = {"cycle": cycle, "sparsity": None, "test": {}, "max_lr": {}}
        for label, tables in by_label.items():
            accs = [table[cycle]["test_accuracy_at_best_val"] for table in tables]
            row["sparsity"] = tables[0][cycle]["sparsity"]
            std = statistics.stdev(accs) if len(accs) > 1 else 0.0
            row["test"][label] = (statistics.mean(accs), std, len(accs))
            row["max_lr"][label] = [table[cycle]["max_lr"] for table in tables]
        rows.append(row)
    return rows
