"""One epoch of masked training and a no-grad evaluation.

Losses and correct counts accumulate on the device and are read once per
epoch, so the loop never waits for the host between steps. The device plan
(precision, memory format, compilation) is applied to every forward pass.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn
from torch.nn import functional as F

from silo_core.engine.device_plan import DevicePlan
from silo_core.pruning import MaskSet

EAGER_FP32 = DevicePlan()


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def train_epoch(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    masks: MaskSet,
    lr_at: Callable[[int], float],
    plan: DevicePlan = EAGER_FP32,
) -> tuple[float, float, float]:
    """Train one epoch; ``lr_at(i)`` gives the LR of the epoch's i-th step.

    Returns (mean loss, accuracy, LR of the last step).
    """
    model.train()
    device = masks.weights[0].device
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    seen = 0
    lr = 0.0
    for step, (inputs, labels) in enumerate(batches):
        lr = lr_at(step)
        set_lr(optimizer, lr)
        with plan.precision(device):
            logits = plan.forward(model, inputs)
            loss = F.cross_entropy(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        masks.apply_()
        loss_sum += loss.detach() * labels.shape[0]
        correct += (logits.detach().argmax(dim=1) == labels).sum()
        seen += labels.shape[0]
    if seen == 0:
        raise ValueError("the training split is empty")
    return float(loss_sum) / seen, int(correct) / seen, lr


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    plan: DevicePlan = EAGER_FP32,
) -> tuple[float, float]:
    """(mean loss, accuracy) over the batches, in eval mode."""
    model.eval()
    loss_sum: torch.Tensor | float = 0.0
    correct: torch.Tensor | int = 0
    seen = 0
    for inputs, labels in batches:
        with plan.precision(inputs.device):
            logits = plan.forward(model, inputs).float()
        loss_sum = loss_sum + F.cross_entropy(logits, labels, reduction="sum")
        correct = correct + (logits.argmax(dim=1) == labels).sum()
        seen += labels.shape[0]
    if seen == 0:
        raise ValueError("cannot evaluate on an empty split")
    return float(loss_sum) / seen, int(correct) / seen
