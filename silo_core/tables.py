"""The cycle table, as ``silo run`` and ``silo watch`` print it, and the sizes
table of a job's outputs (``silo run``, ``silo download``).

Torch-free (rich only), so the API client can print what the engine reports:
rows are the engine's ``CycleResult`` or the API's ``CycleOut``, which carry
the same fields.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from rich.table import Table


class CycleRow(Protocol):
    """What the table reads of a row (read-only: the rows are frozen records)."""

    @property
    def cycle(self) -> int: ...
    @property
    def sparsity(self) -> float: ...
    @property
    def max_lr(self) -> float: ...
    @property
    def best_epoch(self) -> int: ...
    @property
    def best_val_accuracy(self) -> float: ...
    @property
    def test_accuracy_at_best_val(self) -> float: ...
    @property
    def final_test_accuracy(self) -> float: ...
    @property
    def seconds(self) -> float: ...


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


def _bytes(count: int) -> str:
    size, unit = float(count), "B"
    for larger in ("KiB", "MiB", "GiB"):
        if size < 1024:
            break
        size, unit = size / 1024, larger
    return f"{count} B" if unit == "B" else f"{size:.1f} {unit}"


def sizes_table(sizes: Mapping[str, Any]) -> Table:
    """sizes.json as a table: each output file, then the weights dense and in CSR."""
    table = Table(title="sizes on disk")
    table.add_column("output")
    table.add_column("size", justify="right")
    table.add_column("of dense", justify="right")
    for name, count in sizes["files"].items():
        table.add_row(name, _bytes(count), "")
    table.add_section()
    weights = sizes["weights"]
    table.add_row("weights dense", _bytes(weights["dense_bytes"]), "100%")
    for dtype, count in weights["sparse_csr_bytes"].items():
        ratio = weights["ratio"][dtype]
        table.add_row(f"weights CSR, {dtype} indices", _bytes(count), f"{ratio:.0%}")
    table.caption = (
        f"{weights['alive_weights']} of {weights['prunable_weights']} prunable weights alive"
    )
    return table
