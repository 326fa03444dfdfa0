"""Which tensors of a model are pruned.

Only the weight matrices of convolutions and linear maps (attention's packed
input projection included) are prunable. BatchNorm parameters and biases never
are: they are few, and zeroing them changes what a layer computes rather than
how many connections it has.
"""

from __future__ import annotations

import torch
from torch import nn

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def prunable_weights(
    model: nn.Module,
    *,
    keep_first_conv_dense: bool = False,
    keep_last_linear_dense: bool = False,
) -> dict[str, torch.Tensor]:
    """Prunable weights by parameter name, in module order.

    ``keep_first_conv_dense`` leaves the first convolution whole and
    ``keep_last_linear_dense`` the classifier, as much of the pruning literature
    does because those layers are small and sensitive.
    """
    # (torch types a layer's weight as a Tensor: a Parameter is one.)
    found: list[tuple[str, torch.Tensor, str]] = []
    for module_name, module in model.named_modules():
        prefix = f"{module_name}." if module_name else ""
        if isinstance(module, _CONV):
            found.append((prefix + "weight", module.weight, "conv"))
        elif isinstance(module, nn.Linear):
            found.append((prefix + "weight", module.weight, "linear"))
        elif isinstance(module, nn.MultiheadAttention) and module.in_proj_weight is not None:
            found.append((prefix + "in_proj_weight", module.in_proj_weight, "attention"))
    skip: set[str] = set()
    if keep_first_conv_dense:
        convs = [name for name, _, kind in found if kind == "conv"]
        if convs:
            skip.add(convs[0])
    if keep_last_linear_dense:
        linears = [name for name, _, kind in found if kind == "linear"]
        if linears:
            skip.add(linears[-1])
    return {name: param for name, param, _ in found if name not in skip}


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def is_exactly_zero(tensor: torch.Tensor, mask: torch.Tensor) -> bool:
    """True when every pruned position of ``tensor`` holds exactly 0."""
    return bool((tensor[~mask.bool()] == 0).all())
