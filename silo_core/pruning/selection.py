"""Choosing which alive weights to remove, on the weights' own device.

All selection works on scores (|w| for magnitude, uniform noise for the random
control). The k smallest alive scores are removed, exactly k of them: ties at
the threshold are broken by position so the fraction removed is exact and the
choice is deterministic.
"""

from __future__ import annotations

import torch


def smallest_k(scores: torch.Tensor, alive: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean tensor marking exactly ``k`` of the alive entries with the lowest score.

    ``scores`` and ``alive`` are flat and on the same device. The threshold comes
    from ``torch.kthvalue`` (linear time on the device); no host copy of the
    weights is made.
    """
    n_alive = int(alive.sum())
    if not 0 <= k <= n_alive:
        raise ValueError(f"cannot remove {k} weights: only {n_alive} are alive")
    if k == 0:
        return torch.zeros_like(alive, dtype=torch.bool)
    masked = torch.where(alive, scores, torch.full_like(scores, float("inf")))
    threshold = torch.kthvalue(masked, k).values
    below = masked < threshold
    ties = masked == threshold
    still_needed = k - below.sum()
    # Take the first `still_needed` tied entries in index order.
    tie_rank = torch.cumsum(ties.to(torch.int64), dim=0)
    return below | (ties & (tie_rank <= still_needed))


def removal_count(n_alive: int, fraction: float) -> int:
    """How many of ``n_alive`` weights one cycle removes: ``round(fraction * n_alive)``."""
    return min(n_alive, round(fraction * n_alive))
