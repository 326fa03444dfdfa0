"""Does SILO help? The schedules side by side, tuned the same way, over seeds.

Run as::

    python bench/reproduce.py                       # digits + MLP on this machine's CPUs
    python bench/reproduce.py --setting resnet20-cifar10 --no-tune --seeds 0,1,2
        --data-root ./data --device cuda            # the authors' shape, with the data
    python bench/reproduce.py --setting digits-extreme --workers 2
                                                    # LeNet-5 and the MLP until accuracy falls

Each schedule (silo, lr_rewind, slr, clr, fine_tune, and the oracle) prunes the
setting's network 20% per cycle to 95% sparsity or more (the setting's preset
decides), from the same dense network per seed.

Tuning is honest and the same for every schedule with a knob: on tuning
seeds that are not reported, each candidate (SILO: alpha x offset; the
baselines: their one max_lr) runs once per seed, and the candidate with the
highest mean *validation* accuracy over the pruning cycles wins. The test
split is read only for the report. The Oracle needs no tuning (it searches
max_lr every cycle, also on validation accuracy); SILO with the authors'
ResNet-20 setting is reported beside the tuned one.

Output: a table of test accuracy (mean +- std over seeds) per schedule at each
sparsity, the max_lr per cycle of SILO against the Oracle's choices, a PNG of
both, and a Markdown report, under ``--out`` (default docs/results/).

``digits-extreme`` (bench/study/extreme.py) goes on to where accuracy falls,
on two models and 10 seeds, and reads the result with paired statistics; its
report is rendered from its results file, again with ``--from-results``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from study.runs import ORACLE, PAPER_SILO, UNTUNED, Run, knobs, run_all, summarise, tune

SETTINGS = {  # name -> the shipped preset it starts from
    "digits-mlp": "digits-silo",
    "resnet20-cifar10": "resnet20-cifar10-silo",
    "vgg19-cifar10": "vgg19-cifar10-silo",
    "digits-extreme": "digits-silo",  # study.extreme's own spec, per model
}


def accuracy_table(rows: list[dict[str, Any]], labels: Sequence[str]) -> Table:
    table = Table(title="test accuracy (%) at the best validation epoch, mean ± std over seeds")
    table.add_column("cycle", justify="right")
    table.add_column("sparsity", justify="right")
    for label in labels:
        table.add_column(label, justify="right")
    for row in rows:
        best = max(row["test"][label][0] for label in labels)
        cells = []
        for label in labels:
            mean, std, _ = row["test"][label]
            text = f"{mean * 100:.2f}±{std * 100:.2f}"
            cells.append(f"[bold]{text}[/bold]" if mean == best else text)
        table.add_row(str(row["cycle"]), f"{row['sparsity']:.1%}", *cells)
    return table


def markdown(
    rows: list[dict[str, Any]],
    labels: Sequence[str],
    chosen: dict[str, dict[str, Any]],
    command: str,
    seconds: float,
    seeds: Sequence[int],
) -> str:
    head = "| cycle | sparsity | " + " | ".join(labels) + " |"
    lines = [head, "|" + "---|" * (len(labels) + 2)]
    for row in rows:
        cells = [f"{m:.2%} ± {s:.2%}" for m, s, _ in (row["test"][label] for label in labels)]
        lines.append(f"| {row['cycle']} | {row['sparsity']:.1%} | " + " | ".join(cells) + " |")
    lr_lines = ["| cycle | sparsity | silo (tuned) | silo (paper) | oracle's choices over seeds |"]
    lr_lines.append("|---|---|---|---|---|")
    for row in rows[1:]:
        oracle = ", ".join(f"{v:g}" for v in sorted(row["max_lr"]["oracle"]))
        lr_lines.append(
            f"| {row['cycle']} | {row['sparsity']:.1%} | {row['max_lr']['silo'][0]:.4f} | "
            f"{row['max_lr']['silo (paper)'][0]:.4f} | {oracle} |"
        )
    tuned = "\n".join(f"- {name}: {knobs(schedule)}" for name, schedule in chosen.items())
    return (
        f"Command: `{command}` ({seconds / 60:.1f} min on {os.cpu_count()} CPUs).\n"
        f"Seeds reported: {', '.join(map(str, seeds))}.\n\n"
        f"Chosen on validation accuracy (tuning seeds, not reported):\n\n{tuned}\n\n"
        "Test accuracy at the best validation epoch, mean ± std over seeds:\n\n"
        + "\n".join(lines)
        + "\n\nmax_lr per cycle:\n\n"
        + "\n".join(lr_lines)
        + "\n"
    )


def plot(rows: list[dict[str, Any]], labels: Sequence[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, (acc, lr) = plt.subplots(1, 2, figsize=(12, 4.5))
    sparsity = [row["sparsity"] for row in rows]
    for label in labels:
        means = [row["test"][label][0] for row in rows]
        stds = [row["test"][label][1] for row in rows]
        acc.plot(sparsity, means, marker="o", markersize=3, label=label)
        acc.fill_between(
            sparsity,
            [m - s for m, s in zip(means, stds, strict=True)],
            [m + s for m, s in zip(means, stds, strict=True)],
            alpha=0.15,
        )
    acc.set(xlabel="sparsity", ylabel="test accuracy (mean ± std)", title=title)
    acc.legend(fontsize=8)
    acc.grid(alpha=0.3)
    pruned = rows[1:]
    x = [row["sparsity"] for row in pruned]
    lr.plot(x, [row["max_lr"]["silo"][0] for row in pruned], marker="o", label="silo (tuned)")
    lr.plot(
        x, [row["max_lr"]["silo (paper)"][0] for row in pruned], marker="o", label="silo (paper)"
    )
    for row in pruned:
        lr.scatter(
            [row["sparsity"]] * len(row["max_lr"]["oracle"]),
            row["max_lr"]["oracle"],
            color="black",
            alpha=0.4,
            s=14,
        )
    lr.scatter([], [], color="black", alpha=0.4, s=14, label="oracle's choice (one per seed)")
    lr.set(xlabel="sparsity", ylabel="max_lr", yscale="log", title="peak learning rate per cycle")
    lr.legend(fontsize=8)
    lr.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def extreme(args: argparse.Namespace) -> None:
    from study import extreme

    console = Console()
    if args.from_results:
        extreme.write(json.loads(args.from_results.read_text()), args.out, console)
        return
    command = " ".join(["python bench/reproduce.py", *sys.argv[1:]])
    results = extreme.run(
        models=args.models.split(",") if args.models else list(extreme.MODELS),
        seeds=[int(s) for s in (args.seeds or extreme.DEFAULT_SEEDS).split(",")],
        tune_seeds=None if args.no_tune else [int(s) for s in args.tune_seeds.split(",")],
        workers=args.workers,
        device=args.device,
        epochs=args.epochs,
        target_sparsity=args.target_sparsity,
        command=command,
        console=console,
    )
    extreme.write(results, args.out, console)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--setting", choices=sorted(SETTINGS), default="digits-mlp")
    parser.add_argument("--seeds", help="reported seeds (0-4; digits-extreme: 0-9)")
    parser.add_argument("--tune-seeds", default="100,101", help="tuning seeds (not reported)")
    parser.add_argument("--no-tune", action="store_true", help="the schedules' defaults")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data-root", help="folder of the data set (CIFAR)")
    parser.add_argument("--out", type=Path, default=Path("docs/results"))
    parser.add_argument("--epochs", type=int, help="override epochs per cycle (quick checks)")
    parser.add_argument("--target-sparsity", type=float, help="override the preset's target")
    parser.add_argument("--models", help="digits-extreme: some of lenet5,mlp (quick checks)")
    parser.add_argument(
        "--from-results", type=Path, help="digits-extreme: render the report from this file"
    )
    args = parser.parse_args()
    if args.setting == "digits-extreme":
        extreme(args)
        return
    args.seeds = args.seeds or "0,1,2,3,4"
    from silo_core.presets import load_preset

    base = load_preset(SETTINGS[args.setting]).model_dump(mode="json", exclude_none=True)
    base["device"] = args.device
    if args.target_sparsity:
        pruning = {k: v for k, v in base["pruning"].items() if k != "cycles"}
        base["pruning"] = {**pruning, "target_sparsity": args.target_sparsity}
    if args.epochs:
        base["training"] = {**base["training"], "epochs_per_cycle": args.epochs}
    if args.data_root:
        base["dataset"] = {**base["dataset"], "root": args.data_root}
    seeds = [int(s) for s in args.seeds.split(",")]
    console = Console()
    started = time.perf_counter()
    chosen = (
        UNTUNED
        if args.no_tune
        else tune(base, [int(s) for s in args.tune_seeds.split(",")], args.workers, console)
    )
    plan = {**chosen, "silo (paper)": PAPER_SILO, "oracle": ORACLE}
    labels = list(plan)
    runs = [Run.of(label, schedule, seed) for label, schedule in plan.items() for seed in seeds]
    console.print(f"report: {len(runs)} jobs on seeds {seeds}")
    rows = summarise(run_all(base, runs, args.workers, console), labels)
    seconds = time.perf_counter() - started
    console.print(accuracy_table(rows, labels))
    args.out.mkdir(parents=True, exist_ok=True)
    png = args.out / f"{args.setting}.png"
    plot(rows, labels, png, f"{args.setting}: test accuracy against sparsity")
    command = " ".join(["python bench/reproduce.py", *sys.argv[1:]])
    report = markdown(rows, labels, chosen, command.strip(), seconds, seeds)
    (args.out / f"{args.setting}.md").write_text(
        f"# {args.setting}\n\n![accuracy against sparsity]({png.name})\n\n{report}"
    )
    console.print(f"wrote {png} and {args.out / f'{args.setting}.md'} ({seconds / 60:.1f} min)")


if __name__ == "__main__":
    main()
