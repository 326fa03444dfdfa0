"""What the engine keeps per epoch besides what it reports.

The reported records (``EpochEvent``, ``CycleResult``) are part of the wire
contract and live in ``silo_contract.reports``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EpochScores:
    """The accuracies the engine picks the cycle's best epoch with (the test
    accuracy is only read)."""

    val_loss: float
    val_accuracy: float
    test_accuracy: float
