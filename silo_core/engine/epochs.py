"""A job's network on its data, trained and scored one epoch at a time.

The engine's cycles and the Oracle's trials train through the same
EpochTrainer, so an epoch trains the same way wherever it runs: the batches'
order comes from (job seed, cycle, epoch), the learning rate from the
schedule, and every step keeps the pruned weights at zero.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import torch

from silo_contract.reports import EpochEvent
from silo_core.data import DatasetInfo, DataSource, Splits, load_dataset
from silo_core.engine.build import build_optimizer, resolve_device
from silo_core.engine.device_plan import plan_for
from silo_core.engine.training import evaluate, train_epoch
from silo_core.models import build_model
from silo_core.pruning import MaskSet, prunable_weights
from silo_core.records import EpochScores
from silo_core.schedules import Schedule
from silo_core.spec import JobSpec

EVAL_BATCH_SIZE = 512  # at least; evaluation keeps no activations for a backward pass


def derived_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from (job seed, cycle, epoch, ...)."""
    return int(
        np.random.SeedSequence(list(parts))
        .generate_state(2, dtype=np.uint32)
        .astype(np.uint64)
        .dot([1 << 31, 1])
    )


def cpu_copy(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Tensors that later training steps (on any device) leave as they are."""
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}


class EpochTrainer:
    """The model a job prunes, its masks and its optimizer, with the job's data.

    Built from the spec alone, so that an Oracle trial in another process
    builds the same network the job's own process does (then loads the
    trial's start into it)."""

    def __init__(self, spec: JobSpec, *, data: Splits | None = None) -> None:
        self.spec = spec
        self.device = resolve_device(spec.device)
        self.data = data or load_dataset(
            spec.dataset.name,
            device=self.device,
            root=spec.dataset.root,
            download=spec.dataset.download,
            val_fraction=spec.dataset.val_fraction,
            split_seed=spec.dataset.split_seed,
            options=spec.dataset.options,
        )
        self.augment = (
            spec.dataset.augment if spec.dataset.augment is not None else self.data.augment_default
        )
        self.cycles = spec.pruning.planned_cycles()
        torch.manual_seed(spec.seed)  # the model's initial weights
        info = self.data.info
        self.model = build_model(
            spec.model.name,
            in_channels=info.in_channels,
            num_classes=info.num_classes,
            image_size=info.image_size,
        ).to(self.device)
        self.masks = MaskSet(
            prunable_weights(
                self.model,
                keep_first_conv_dense=spec.pruning.keep_first_conv_dense,
                keep_last_linear_dense=spec.pruning.keep_last_linear_dense,
            )
        )
        self.plan = plan_for(spec.training, self.device, self.model)
        self.optimizer = build_optimizer(spec.optimizer, self.model)

    @property
    def info(self) -> DatasetInfo:
        """The input shape and classes the model is built for."""
        return self.data.info

    def epochs_in(self, cycle: int) -> int:
        training = self.spec.training
        return training.dense_epochs if cycle == 0 else training.epochs_per_cycle

    def new_optimizer(self) -> None:
        """A fresh optimizer: no momentum or moments carried over."""
        self.optimizer = build_optimizer(self.spec.optimizer, self.model)

    def load(
        self,
        model: dict[str, torch.Tensor],
        masks: dict[str, torch.Tensor] | None = None,
        optimizer: dict[str, object] | None = None,
    ) -> None:
        """Go on from saved weights (and masks, optimizer state, where given)."""
        self.model.load_state_dict(model)
        if masks is not None:
            self.masks.load_state_dict(masks)
        if optimizer is not None:
            self.optimizer.load_state_dict(optimizer)

    def train_epoch(
        self, cycle: int, epoch: int, schedule: Schedule
    ) -> tuple[EpochEvent, EpochScores]:
        """Train and score epoch ``epoch`` (0-based) of ``cycle``; no bookkeeping."""
        started = time.perf_counter()
        epochs = self.epochs_in(cycle)
        batch_size = self.spec.training.batch_size
        steps_per_epoch = -(-self.data.train.num_examples // batch_size)
        total_steps = epochs * steps_per_epoch
        batches = self.data.train.batches(
            batch_size,
            shuffle=True,
            augment=self.augment,
            seed=derived_seed(self.spec.seed, cycle, epoch),
        )
        train_loss, train_acc, lr = train_epoch(
            self.model,
            batches,
            self.optimizer,
            self.masks,
            lambda step: schedule.lr(cycle, epoch * steps_per_epoch + step, total_steps),
            self.plan,
        )
        scores = self.score()
        event = EpochEvent(
            cycle=cycle,
            epoch=epoch + 1,
            epochs=epochs,
            cycles=self.cycles,
            lr=lr,
            max_lr=schedule.max_lr(cycle),
            train_loss=train_loss,
            train_accuracy=train_acc,
            val_loss=scores.val_loss,
            val_accuracy=scores.val_accuracy,
            sparsity=self.masks.sparsity(),
            seconds=time.perf_counter() - started,
        )
        return event, scores

    def score(self) -> EpochScores:
        """The network as it is, on the validation and the test split."""
        val_loss, val_acc = evaluate(self.model, self._eval_batches(self.data.val), self.plan)
        _, test_acc = evaluate(self.model, self._eval_batches(self.data.test), self.plan)
        return EpochScores(val_loss, val_acc, test_acc)

    def _eval_batches(self, split: DataSource) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        batch_size = max(self.spec.training.batch_size, EVAL_BATCH_SIZE)
        return split.batches(batch_size, shuffle=False, augment=False, seed=0)
