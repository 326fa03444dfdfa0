"""The digits-extreme report, rendered from its results file (study.extreme).

Per model: test accuracy per sparsity and schedule, tuned SILO minus every
other schedule seed by seed (study.paired), and the Oracle's validation
accuracy over its grid with the interval of peaks within one standard error
of the best (study.oracle_interval), against SILO's max_lr.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from study.oracle_interval import GridProfile, grid_profile
from study.paired import CONFIDENCE, PairedDifference, paired_difference, significant_ranges
from study.runs import knobs

NAMES = {"lenet5": "LeNet-5", "mlp": "MLP"}
TUNED = "silo"  # the label every other schedule is compared with
PAPER = "silo (paper)"
SPARSITY_TICKS = (0.2, 0.5, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999)


def shown(label: str) -> str:
    return "silo (tuned)" if label == TUNED else label


def accuracies(study: dict[str, Any], label: str, cycle: int) -> list[float]:
    """One test accuracy per seed, in the seeds' order."""
    return [per_seed[cycle] for per_seed in study["test"][label]]


def differences(study: dict[str, Any]) -> dict[str, list[PairedDifference]]:
    """Per other label, tuned SILO minus it at each pruning cycle (1..T)."""
    cycles = range(1, len(study["sparsity"]))
    return {
        label: [
            paired_difference(accuracies(study, TUNED, c), accuracies(study, label, c))
            for c in cycles
        ]
        for label in study["test"]
        if label != TUNED
    }


def profiles(study: dict[str, Any]) -> list[GridProfile]:
    """The Oracle's grid profile at each pruning cycle (1..T)."""
    oracle = study["oracle"]
    cycles = len(oracle["val"][0])
    return [grid_profile(oracle["grid"], [s[c] for s in oracle["val"]]) for c in range(cycles)]


def peak(study: dict[str, Any], label: str, cycle: int) -> float:
    """A schedule's max_lr at ``cycle`` (SILO's depends on the cycle, not the seed)."""
    return float(study["max_lr"][label][0][cycle])


def headline(study: dict[str, Any], diffs: dict[str, list[PairedDifference]]) -> list[str]:
    sparsity = study["sparsity"][1:]
    lines = []
    for label, per_cycle in diffs.items():
        ranges = significant_ranges(sparsity, per_cycle)
        ahead = sum(r.points for r in ranges if r.direction > 0)
        behind = sum(r.points for r in ranges if r.direction < 0)
        parts = [
            f"{'ahead' if r.direction > 0 else 'behind'} at {r.first:.2%}"
            + (f" to {r.last:.2%}" if r.points > 1 else "")
            for r in ranges
        ]
        count = f"ahead in {ahead}, behind in {behind} of {len(per_cycle)} cycles"
        where = f": {'; '.join(parts)}" if parts else ""
        lines.append(f"- against {shown(label)}: {count}{where}")
    return lines


def inside_counts(study: dict[str, Any], grid: list[GridProfile]) -> list[str]:
    lines = []
    for paired, rule in ((False, "one SE of the best"), (True, "one paired SE")):
        for label in (TUNED, PAPER):
            lrs = [peak(study, label, c) for c in range(1, len(grid) + 1)]
            inside = sum(p.contains(lr, paired) for p, lr in zip(grid, lrs, strict=True))
            near = sum(p.nearest_is_good(lr, paired) for p, lr in zip(grid, lrs, strict=True))
            lines.append(
                f"- {rule}, {shown(label)}: inside in {inside} of {len(grid)} cycles; "
                f"its nearest grid peak good in {near}"
            )
    return lines


def accuracy_table(study: dict[str, Any]) -> list[str]:
    labels = list(study["test"])
    head = " | ".join(map(shown, labels))
    lines = [f"| cycle | sparsity | {head} |", "|---" * (len(labels) + 2) + "|"]
    for cycle, sparsity in enumerate(study["sparsity"]):
        cells = []
        for label in labels:
            values = accuracies(study, label, cycle)
            cells.append(f"{statistics.fmean(values):.2%} ± {statistics.stdev(values):.2%}")
        lines.append(f"| {cycle} | {sparsity:.2%} | " + " | ".join(cells) + " |")
    return lines


def difference_table(study: dict[str, Any], diffs: dict[str, list[PairedDifference]]) -> list[str]:
    labels = list(diffs)
    lines = ["| cycle | sparsity | " + " | ".join(labels) + " |", "|---" * (len(labels) + 2) + "|"]
    for index, sparsity in enumerate(study["sparsity"][1:]):
        cells = []
        for label in labels:
            d = diffs[label][index]
            text = (
                f"{d.mean * 100:+.2f} [{d.low * 100:+.2f}, {d.high * 100:+.2f}] "
                f"{d.wins}/{d.ties}/{d.losses}"
            )
            cells.append(f"**{text}**" if d.direction else text)
        lines.append(f"| {index + 1} | {sparsity:.2%} | " + " | ".join(cells) + " |")
    return lines


def oracle_table(study: dict[str, Any], grid: list[GridProfile]) -> list[str]:
    peaks = study["oracle"]["grid"]
    head = " | ".join(f"{p:g}" for p in peaks)
    lines = [
        f"| cycle | sparsity | {head} | good interval (SE / paired) | {shown(TUNED)} | {PAPER} |",
        "|---" * (len(peaks) + 5) + "|",
    ]
    for cycle, profile in enumerate(grid, 1):
        cells = []
        for i, (mean, se) in enumerate(zip(profile.mean, profile.se, strict=True)):
            text = f"{mean * 100:.1f} ± {se * 100:.1f}"
            if profile.is_good(i, paired=True):
                text += "*"
            good = profile.is_good(i)
            cells.append(f"**{text}**" if i == profile.best else f"_{text}_" if good else text)
        intervals = " / ".join(f"{lo:g}–{hi:g}" for lo, hi in map(profile.interval, (False, True)))
        marks = []
        for label in (TUNED, PAPER):
            lr = peak(study, label, cycle)
            inside = ("in" if profile.contains(lr, paired) else "out" for paired in (False, True))
            marks.append(f"{lr:.4g} {' / '.join(inside)}")
        lines.append(
            f"| {cycle} | {study['sparsity'][cycle]:.2%} | {' | '.join(cells)} | "
            f"{intervals} | {' | '.join(marks)} |"
        )
    return lines


def model_section(study: dict[str, Any], figure: str, seeds: int) -> str:
    model = study["model"]
    diffs = differences(study)
    grid = profiles(study)
    chosen = "\n".join(f"- {name}: {knobs(s)}" for name, s in study["chosen"].items())
    return "\n".join(
        [
            f"## {NAMES.get(model, model)} (`{model}`), to {study['sparsity'][-1]:.2%} sparsity",
            "",
            f"![{model}: accuracy and max_lr against sparsity]({figure})",
            "",
            f"{study['seconds'] / 60:.1f} min. Chosen on validation accuracy (tuning seeds):",
            "",
            chosen,
            "",
            f"**Where the {CONFIDENCE:.0%} interval of tuned SILO minus another schedule "
            "excludes zero:**",
            "",
            *headline(study, diffs),
            "",
            "**SILO's max_lr in the Oracle's good interval:**",
            "",
            *inside_counts(study, grid),
            "",
            f"### Test accuracy at the best validation epoch, mean ± std over {seeds} seeds",
            "",
            *accuracy_table(study),
            "",
            "### Tuned SILO minus each schedule, seed by seed (percentage points)",
            "",
            f"Mean [{CONFIDENCE:.0%} paired t interval] and wins/ties/losses of SILO over "
            f"{seeds} seeds; bold where the interval excludes zero.",
            "",
            *difference_table(study, diffs),
            "",
            "### The Oracle's validation accuracy per grid peak (%, mean ± SE over seeds)",
            "",
            "Bold: the best peak; italic: the others within one SE of it; `*`: within one "
            "paired SE of it. Each good interval runs from the lowest to the highest such "
            "peak; `in` / `out` say whether SILO's max_lr lies in the first / the second.",
            "",
            *oracle_table(study, grid),
            "",
        ]
    )


def markdown(results: dict[str, Any], figures: dict[str, str]) -> str:
    split, training = results["split"], results["training"]
    dense = training["dense"]
    tune_seeds = results["tune_seeds"]
    tuning = (
        f"tuning seeds {', '.join(map(str, tune_seeds))} (not reported)"
        if tune_seeds
        else "no tuning (the schedules' defaults)"
    )
    grid = ", ".join(f"{p:g}" for p in next(iter(results["models"].values()))["oracle"]["grid"])
    seeds = len(results["seeds"])
    intro = f"""# digits-extreme: LeNet-5 and the MLP pruned until accuracy falls

Command: `{results["command"]}` ({results["seconds"] / 60:.1f} min on {results["cpus"]} CPUs,
{results["workers"]} worker processes with one torch thread each).

- Seeds: {seeds} reported ({", ".join(map(str, results["seeds"]))}); {tuning}.
- Data: digits with split seed {split["split_seed"]} for every run: {split["train"]} train,
  {split["val"]} validation ({split["val_fraction"]:.0%} of the non-test images) and
  {split["test"]} test images.
- Training: dense {dense["epochs"]} epochs at max_lr {dense["max_lr"]:g}, then
  {training["epochs_per_cycle"]} epochs per cycle, batch {training["batch_size"]}; each cycle
  prunes {results["pruning_fraction"]:.0%} of the alive weights (global magnitude).
- The Oracle searches max_lr in {{{grid}}} every cycle on validation accuracy.
- Paired statistics: a seed gives every schedule the same dense network and the same
  batches, so tuned SILO's test accuracy minus another schedule's is taken seed by seed:
  its mean with a {CONFIDENCE:.0%} paired t interval (mean ± t(0.975, n − 1) · sd / √n,
  t from scipy; n = {seeds}), and the seeds where SILO is above, equal to and below it.
  Each interval is at {CONFIDENCE:.0%} on its own: among the six comparisons over some 30
  cycles, about {1 - CONFIDENCE:.0%} of the intervals (eight or nine per model) would exclude
  zero by chance alone, so a lone cycle says little and a run of cycles says more.
- The Oracle's good interval, per cycle: its grid peaks whose mean validation accuracy
  over seeds lies within one standard error of the best peak's (that peak's SE over
  seeds), from the lowest to the highest. That SE holds how far the seeds' networks
  differ; as every trial of a seed starts from the same network, a second, paired rule
  keeps a peak when its mean shortfall from the best lies within one SE of that
  shortfall over seeds. SILO is inside when its max_lr lies in the range (to 1%); as
  its max_lr often lies between two grid peaks, whether its nearest grid peak (on a log
  scale) is good is counted too.
"""
    sections = [
        model_section(study, figures[model], seeds) for model, study in results["models"].items()
    ]
    return intro + "\n" + "\n".join(sections)


def plot(study: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, (acc, lr) = plt.subplots(1, 2, figsize=(13, 4.8))
    x = study["sparsity"][1:]
    cycles = range(1, len(study["sparsity"]))
    for label in study["test"]:
        means = [statistics.fmean(accuracies(study, label, c)) for c in cycles]
        stds = [statistics.stdev(accuracies(study, label, c)) for c in cycles]
        width = 2.2 if label == TUNED else 1.2
        acc.plot(x, means, marker="o", markersize=2.5, linewidth=width, label=shown(label))
        acc.fill_between(
            x,
            [m - s for m, s in zip(means, stds, strict=True)],
            [m + s for m, s in zip(means, stds, strict=True)],
            alpha=0.12,
        )
    dense = statistics.fmean(accuracies(study, TUNED, 0))
    acc.axhline(dense, color="grey", linestyle=":", label=f"dense ({dense:.1%})")
    name = NAMES.get(study["model"], study["model"])
    acc.set(xlabel="sparsity (logit scale)", ylabel="test accuracy (mean ± std over seeds)")
    acc.set(xscale="logit", title=f"{name} on digits: test accuracy")
    acc.legend(fontsize=8, loc="best")
    acc.grid(alpha=0.3)

    grid = profiles(study)
    for paired, alpha, text in ((False, 0.2, "1 SE of its best"), (True, 0.35, "1 paired SE")):
        lr.fill_between(
            x,
            [p.interval(paired)[0] for p in grid],
            [p.interval(paired)[1] for p in grid],
            step="mid",
            color="grey",
            alpha=alpha,
            label=f"Oracle's good interval (within {text})",
        )
    lr.scatter(x, [p.best_peak for p in grid], color="black", s=12, label="Oracle's best peak")
    lr.plot(
        x, [peak(study, TUNED, c) for c in cycles], marker="o", markersize=3, label=shown(TUNED)
    )
    lr.plot(x, [peak(study, PAPER, c) for c in cycles], marker="o", markersize=3, label=PAPER)
    lr.set(xlabel="sparsity (logit scale)", ylabel="max_lr", xscale="logit", yscale="log")
    lr.set(title=f"{name}: peak learning rate per cycle")
    lr.legend(fontsize=8, loc="best")
    lr.grid(alpha=0.3)
    ticks = [t for t in SPARSITY_TICKS if x[0] <= t <= x[-1] * 1.0001]
    for axes in (acc, lr):
        axes.set_xticks(ticks, [f"{t * 100:g}%" for t in ticks])
        axes.set_xticks([], minor=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
