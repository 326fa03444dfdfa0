"""The cycle table, as ``silo run`` and ``silo watch`` print it.

Torch-free (rich only), so the API client can print what the engine reports:
rows are the engine's ``CycleResult`` or the API's ``CycleOut``, which carry
the same fields.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from rich.table import Table


class CycleRow(Protocol):
    cycle: int
    sparsity: float
    max_lr: float
    best_epoch: int
    best_val_accuracy: float
    test_accuracy_at_best_val: float
    final_test_accuracy: float
    seconds: float


def cycle_table(rows: Iterable[CycleRow], title: str) -> Table:
    """One line per cycle: sparsity, peak LR, best epoch, accuracies, seconds."""
    table = Table(title=title)
    for header in ("cycle", "sparsity", "max_lr", "best ep", "val", "test@best", "test end", "sec"):
        table.add_column(header, justify="right")
    for row in rows:
        table.add_row(
            str(row.cycle),
            f"{row.sparsity:.2%}",
            f"{row.max_lr:.5f}",
            str(row.best_epoch),
            f"{row.best_val_accuracy:.2%}",
            f"{row.test_accuracy_at_best_val:.2%}",
            f"{row.final_test_accuracy:.2%}",
            f"{row.seconds:.1f}",
        )
    return table
