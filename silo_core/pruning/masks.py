"""Binary masks kept beside the model, on its device.

Masks are applied in place after every optimizer step with one fused
``torch._foreach_mul_`` over all pruned tensors. We hand-write this rather than
use ``torch.nn.utils.prune``: its forward pre-hooks recompute ``weight_orig *
mask`` in every forward pass, keep a second copy of every weight, and rename
the state-dict keys (``weight_orig``/``weight_mask``), which would leak into
checkpoints and artifacts. Multiplying after the step keeps pruned weights
exactly zero whatever the optimizer does (momentum and weight decay included)
at the cost of one fused kernel per step.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import torch

from silo_core.plugins import PRUNING_METHODS
from silo_core.pruning.selection import removal_count, smallest_k


class MaskSet:
    """One mask per prunable weight; 1 keeps a weight, 0 removes it."""

    def __init__(self, weights: Mapping[str, torch.Tensor]) -> None:
        if not weights:
            raise ValueError("the model has no prunable weights")
        self.names = list(weights)
        self.weights = [weights[n] for n in self.names]
        self.masks = [
            torch.ones_like(w, memory_format=torch.contiguous_format) for w in self.weights
        ]

    # -- counts -------------------------------------------------------------
    def total(self) -> int:
        return sum(m.numel() for m in self.masks)

    def alive(self) -> int:
        # Counted in int64: a float32 sum stops counting exactly above 2**24 weights.
        return int(sum(m.sum(dtype=torch.int64) for m in self.masks))

    def sparsity(self) -> float:
        """Fraction of prunable weights removed."""
        return 1.0 - self.alive() / self.total()

    def layer_sparsity(self) -> dict[str, float]:
        return {n: 1.0 - float(m.mean()) for n, m in zip(self.names, self.masks, strict=True)}

    # -- applying -----------------------------------------------------------
    @torch.no_grad()
    def apply_(self) -> None:
        """Zero every pruned weight in place (one fused kernel per device)."""
        torch._foreach_mul_(self.weights, self.masks)

    @torch.no_grad()
    def mask_optimizer_state_(self, optimizer: torch.optim.Optimizer) -> None:
        """Zero optimizer buffers (momentum, Adam moments) at pruned positions.

        Not needed for the weights to stay zero, but it keeps a continued
        optimizer (fine-tuning mode) from carrying stale velocity of removed
        connections into statistics such as buffer norms.
        """
        for weight, mask in zip(self.weights, self.masks, strict=True):
            for value in optimizer.state.get(weight, {}).values():
                if isinstance(value, torch.Tensor) and value.shape == mask.shape:
                    value.mul_(mask)

    @torch.no_grad()
    def mask_zeros_(self) -> None:
        """Take every weight that is exactly zero as pruned. Starting weights from
        a pruned network (a job's outputs) carry their pruning as zeros; masking
        them keeps the network's sparsity through further training instead of
        letting those weights grow back. A trained dense network has no exact
        zeros, so it starts with every weight alive."""
        for weight, mask in zip(self.weights, self.masks, strict=True):
            mask.mul_(weight != 0)

    # -- pruning ------------------------------------------------------------
    @torch.no_grad()
    def prune_(self, fraction: float, method: str = "global_magnitude", *, seed: int = 0) -> int:
        """Remove ``fraction`` of the weights still alive with ``method``, a built-in or
        plug-in pruning method (``silo_core.plugins.PRUNING_METHODS``); returns how
        many were removed."""
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"fraction must be in (0, 1), got {fraction}")
        entry = PRUNING_METHODS.get(method)
        prune: PruningMethod = entry.load()
        with entry.blamed("prune"):
            removed = prune(self, fraction, seed=seed)
        self.apply_()
        return removed

    @torch.no_grad()
    def remove_lowest_(self, scores: Sequence[torch.Tensor], fraction: float) -> int:
        """Remove ``fraction`` of the alive weights with the lowest ``scores`` (one
        tensor per weight, compared across all layers); returns how many were removed."""
        flat_scores = torch.cat([s.flatten() for s in scores])
        alive = torch.cat([m.flatten().bool() for m in self.masks])
        k = removal_count(int(alive.sum()), fraction)
        drop = smallest_k(flat_scores, alive, k)
        offset = 0
        for mask in self.masks:
            n = mask.numel()
            mask.view(-1)[drop[offset : offset + n]] = 0
            offset += n
        return k

    # -- persistence --------------------------------------------------------
    def state_dict(self) -> dict[str, torch.Tensor]:
        """Boolean masks by parameter name (an eighth of the float size)."""
        return {n: m.bool().cpu() for n, m in zip(self.names, self.masks, strict=True)}

    @torch.no_grad()
    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        missing = set(self.names) - set(state)
        unexpected = set(state) - set(self.names)
        if missing or unexpected:
            raise ValueError(
                f"mask names differ: missing {sorted(missing)}, unexpected {sorted(unexpected)}"
            )
        for name, mask in zip(self.names, self.masks, strict=True):
            mask.copy_(state[name].to(mask.device, mask.dtype))


class PruningMethod(Protocol):
    """Signature of every pruning method, built in or plug-in (``silo.pruning``): set
    to 0 the masks of ``fraction`` of the weights still alive (the caller zeroes the
    weights after) and return how many were removed. ``seed`` is the cycle's seed
    for any random choice."""

    def __call__(self, masks: MaskSet, fraction: float, *, seed: int) -> int: ...


# The built-in methods (silo_core.plugins.PRUNING_METHODS names them).


def prune_global_magnitude(masks: MaskSet, fraction: float, *, seed: int) -> int:
    """The smallest weights by magnitude, compared across all layers."""
    del seed  # deterministic
    # Scores are compared across devices only after torch.cat, so keep them on
    # the first weight's device.
    device = masks.weights[0].device
    return masks.remove_lowest_([w.detach().abs().to(device) for w in masks.weights], fraction)


def prune_layerwise_magnitude(masks: MaskSet, fraction: float, *, seed: int) -> int:
    """The smallest weights by magnitude, ``fraction`` of each layer's alive weights."""
    del seed  # deterministic
    removed = 0
    for weight, mask in zip(masks.weights, masks.masks, strict=True):
        alive = mask.flatten().bool()
        k = removal_count(int(alive.sum()), fraction)
        drop = smallest_k(weight.detach().abs().flatten(), alive, k)
        mask.view(-1)[drop] = 0
        removed += k
    return removed


def prune_random(masks: MaskSet, fraction: float, *, seed: int) -> int:
    """Weights drawn uniformly at random from ``seed`` (the baseline of the literature)."""
    device = masks.weights[0].device
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    scores = [
        torch.rand(w.shape, generator=generator, device=device, dtype=torch.float32)
        for w in masks.weights
    ]
    return masks.remove_lowest_(scores, fraction)
