"""Reproducible stratified splitting.

Held-out splits must depend only on the split seed (never on a training seed), so that runs
with different training seeds are scored on the very same test images. Stratifying keeps
every class represented in proportion even in small splits.
"""

from __future__ import annotations

import numpy as np


def stratified_split(
    labels: np.ndarray, fraction: float, seed: int, stream: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Split example indices into ``(kept, held_out)``, holding out ``fraction`` per class.

    The held-out count is ``round(fraction * n)`` overall; it is shared between classes by
    largest remainder, so the total is exact and each class gets its proportional share.
    ``stream`` separates independent splits drawn from the same ``seed`` (e.g. the test
    split and the validation split). Both index arrays are returned sorted, so the stored
    order of the data survives the split.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    labels = np.asarray(labels)
    n = labels.shape[0]
    total = round(fraction * n)
    if total == 0:
        return np.arange(n, dtype=np.int64), np.empty(0, dtype=np.int64)

    classes, counts = np.unique(labels, return_counts=True)
    quotas = fraction * counts
    per_class = np.floor(quotas).astype(np.int64)
    leftover = total - int(per_class.sum())
    if leftover > 0:
        # Stable sort keeps ties in class order, so the allocation is deterministic.
        order = np.argsort(-(quotas - per_class), kind="stable")
        per_class[order[:leftover]] += 1

    rng = np.random.default_rng([seed % 2**64, stream])
    held_parts = []
    for cls, take in zip(classes, per_class, strict=True):
        members = np.flatnonzero(labels == cls)
        held_parts.append(rng.permutation(members)[:take])
    held = np.sort(np.concatenate(held_parts)).astype(np.int64)
    mask = np.ones(n, dtype=bool)
    mask[held] = False
    return np.flatnonzero(mask).astype(np.int64), held
