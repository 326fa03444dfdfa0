"""The Oracle's search: trials one after another in the job's process, against
parallel Ray Tune trials inside the same CPUs.

Run as::

    python bench/oracle_search.py [--cpus 2] [--epochs 40] [--cycles 2] [--repeats 1]
        [--grid 0.003,0.01,0.03,0.1] [--model mlp] [--dataset digits]

Both runs prune and retrain the same spec on the CPU. ``in process`` is the
engine's own search with ``--cpus`` torch threads; ``Ray Tune`` is
``workers.oracle_tune.TuneOracleSearch`` on a local Ray head of ``--cpus``
CPUs, ``min(grid, cpus)`` trials at a time with ``cpus // concurrent``
threads each, as an attempt with that many CPUs runs it. Each Oracle cycle's
search is timed (wall clock); the two runs take turns ``--repeats`` times and
the table gives each cycle's median and the ratio. The two runs must choose
the same max_lr in every cycle, or the benchmark fails.

It starts its own Ray head and stops that head's processes at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import ray
import torch
from rich.console import Console
from rich.table import Table

from silo_core.engine.oracle import (
    OracleSearch,
    SearchProgress,
    SearchResult,
    TrialStart,
    search_in_process,
)
from silo_core.engine.run_records import JobResult
from silo_core.engine.runner import PruningEngine
from silo_core.engine.trial import trial_routine
from silo_core.spec import JobSpec, parse_spec
from workers.oracle_tune import TrialSlots, TuneOracleSearch
from workers.ray_cluster import connect, stop_local_head


def timed(search: OracleSearch, seconds: list[float]) -> OracleSearch:
    """``search``, appending each call's wall time to ``seconds``."""

    def run(
        start: TrialStart,
        grid: Sequence[float],
        should_stop: Callable[[], bool],
        progress: SearchProgress | None = None,
    ) -> SearchResult | None:
        began = time.perf_counter()
        try:
            return search(start, grid, should_stop, progress)
        finally:
            seconds.append(time.perf_counter() - began)

    return run


def run_in_process(spec: JobSpec, cpus: int, seconds: list[float]) -> JobResult:
    torch.set_num_threads(cpus)
    engine = PruningEngine(spec)
    engine.oracle_search = timed(search_in_process(trial_routine(engine.trainer)), seconds)
    return engine.run()


def run_on_tune(spec: JobSpec, cpus: int, storage: Path, seconds: list[float]) -> JobResult:
    grid = spec.schedule.grid  # type: ignore[union-attr]
    slots = TrialSlots.sharing(cpus, len(grid), node_ip=ray.util.get_node_ip_address())
    torch.set_num_threads(cpus)  # the dense cycle, in this process as in the actor
    search = timed(TuneOracleSearch(storage, slots), seconds)
    return PruningEngine(spec, oracle_search=search).run()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=40, help="retraining epochs per cycle")
    parser.add_argument("--cycles", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1, help="turns of each run")
    parser.add_argument("--grid", default="0.003,0.01,0.03,0.1")
    parser.add_argument("--model", default="mlp")
    parser.add_argument("--dataset", default="digits")
    args = parser.parse_args()
    # Tune's newer console output prints a banner per search whatever the
    # verbosity; the older one honours verbose=0 and keeps the table readable.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    grid = [float(value) for value in args.grid.split(",")]
    spec = parse_spec(
        {
            "model": {"name": args.model},
            "dataset": {"name": args.dataset},
            "pruning": {"method": "global_magnitude", "fraction": 0.5, "cycles": args.cycles},
            "schedule": {"name": "oracle", "grid": grid},
            "training": {
                "epochs_per_cycle": args.epochs,
                "batch_size": 128,
                "dense": {"epochs": 2, "max_lr": 0.1},
            },
            "seed": 0,
            "device": "cpu",
        }
    )
    console = Console()
    local: list[list[float]] = []
    tuned: list[list[float]] = []
    with tempfile.TemporaryDirectory() as folder:
        state = Path(folder) / "ray"
        connect(None, state, num_cpus=args.cpus)
        try:
            slots = TrialSlots.sharing(args.cpus, len(grid), node_ip="-")
            console.print(
                f"{args.model} on {args.dataset}: {len(grid)} trials of {args.epochs} epochs "
                f"per cycle, {args.cycles} cycles, {args.cpus} CPUs; Tune runs "
                f"{slots.concurrent} at a time with {slots.threads} threads each"
            )
            for _ in range(args.repeats):  # turns, so that noise falls on both
                local.append([])
                reference = run_in_process(spec, args.cpus, local[-1])
                tuned.append([])
                searched = run_on_tune(spec, args.cpus, Path(folder) / "oracle", tuned[-1])
        finally:
            ray.shutdown()
            stop_local_head(state)
    chosen = [row.max_lr for row in reference.cycles[1:]]
    if chosen != [row.max_lr for row in searched.cycles[1:]]:
        raise SystemExit("the two searches chose differently: a bug, not a timing")
    local_s = [statistics.median(turns) for turns in zip(*local, strict=True)]
    tuned_s = [statistics.median(turns) for turns in zip(*tuned, strict=True)]
    table = Table(title=f"Oracle search wall time per cycle, median of {args.repeats} (seconds)")
    for column in ("cycle", "chosen max_lr", "in process", "Ray Tune", "Tune vs in process"):
        table.add_column(column, justify="right")
    for cycle, (max_lr, a, b) in enumerate(zip(chosen, local_s, tuned_s, strict=True), start=1):
        table.add_row(str(cycle), f"{max_lr:g}", f"{a:.1f}", f"{b:.1f}", f"{a / b:.2f}x")
    a, b = sum(local_s), sum(tuned_s)
    table.add_row("all", "", f"{a:.1f}", f"{b:.1f}", f"{a / b:.2f}x")
    console.print(table)


if __name__ == "__main__":
    main()
