"""Retraining throughput of masked training, and the cost of one pruning step.

Run as::

    python bench/retrain_throughput.py [--device cpu|cuda] [--models resnet20,vgg19,resnet50]
        [--precision auto|fp32|bf16] [--compile BACKEND] [--paper-job 50]
        [--batch-size 128] [--steps N] [--warmup N] [--repeats N] [--prune-repeats N]

Part 1 prunes each of ``--models`` to 80% sparsity (global magnitude, ``MaskSet.prune_``)
and retrains it on synthetic CIFAR-shaped data (3x32x32, resnet50 3x64x64, 10 classes,
generated on the device) with three loops that share the optimizer (SGD, momentum 0.9, weight decay
5e-4), the batches and the step count:

* ``masked (ours)``: :func:`silo_core.engine.training.train_epoch` with the
  :class:`MaskSet`, which re-zeroes pruned weights after every step with one fused
  ``torch._foreach_mul_``;
* ``dense``: the same loop without any mask, the reference for what masking costs;
* ``numpy-copy (published)``: after ``backward``, every prunable weight and its
  gradient are copied to NumPy, the gradient is zeroed where the weight is zero,
  and the gradient is copied back to the device before the step.

Each loop trains its own copy of the same pruned model with its own optimizer. It
first takes ``--warmup`` untimed steps; then the loops take turns (a, b, c, a, b,
c, ...) over the same ``--steps`` batches, ``--repeats`` rounds, and the median
images/second of each loop is reported, because a shared machine is noisy.

Part 2 times one global magnitude pruning step (``MaskSet(...).prune_(0.2)``) on
resnet20 (CIFAR-sized), resnet50 and vit_b_16 (ImageNet-sized, 224x224, 1000
classes), median of ``--prune-repeats`` calls, each from the same dense weights and
a fresh MaskSet (the first call is included: on a CPU every call allocates its
temporaries afresh, and one more vit_b_16 call would cost more than the median saves).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from torch import nn
from torch.nn import functional as F

from silo_core.data import load_dataset
from silo_core.engine.device_plan import DevicePlan, plan_for
from silo_core.engine.runner import PruningEngine
from silo_core.engine.training import set_lr, train_epoch
from silo_core.models import build_model
from silo_core.plugins import MODELS
from silo_core.pruning import MaskSet, is_exactly_zero, prunable_weights
from silo_core.spec import TrainingSpec, parse_spec

Batch = tuple[torch.Tensor, torch.Tensor]

LEARNING_RATE = 0.05
MOMENTUM = 0.9
WEIGHT_DECAY = 5e-4
SPARSITY = 0.8
PRUNE_FRACTION = 0.2
UPKEEP_CALLS = 50
NUM_CLASSES = 10
IMAGE_SIZE = 32
#: Input size per model where CIFAR's 32x32 is not the one to measure at.
MODEL_IMAGE_SIZE = {"resnet50": 64}
#: The authors' job shape: 160 dense epochs, then 25 cycles of 50 epochs.
PAPER_DENSE_EPOCHS, PAPER_CYCLES, PAPER_EPOCHS = 160, 25, 50
CHANNELS = 3

#: Targets: masked training within 10% of dense, at least 10x the NumPy-copy loop
#: (a GPU target: there that loop pays host transfers), and on a GPU ResNet-20's
#: masked retraining at 30,000 images/s or more.
DENSE_TARGET = 0.9
NUMPY_TARGET = 10.0
GPU_RATE_TARGET = {"resnet20": 30_000}

#: (model, image size, classes) for the pruning-step timings.
PRUNE_MODELS: tuple[tuple[str, int, int], ...] = (
    ("resnet20", 32, 10),
    ("resnet50", 224, 1000),
    ("vit_b_16", 224, 1000),
)

MASKED = "masked (ours)"
DENSE = "dense"
NUMPY_COPY = "numpy-copy (published)"
LOOP_NAMES = (MASKED, DENSE, NUMPY_COPY)


def synchronize(device: torch.device) -> None:
    """Wait for queued device work so the clock reads finished work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def constant_lr(step: int) -> float:
    del step
    return LEARNING_RATE


def make_optimizer(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(
        model.parameters(), lr=LEARNING_RATE, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY
    )


# -- the three loops ----------------------------------------------------------
# Each runs one pass over ``batches`` and returns (mean loss, accuracy). The dense and
# NumPy-copy loops mirror train_epoch's bookkeeping (LR set every step, loss and correct
# counts accumulated on the device and read once at the end), so the three loops differ
# only in how pruned weights are kept at zero.


def forward_loss(
    model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, plan: DevicePlan
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and loss as train_epoch computes them under ``plan``."""
    with plan.precision(inputs.device):
        logits = plan.forward(model, inputs)
        return logits, F.cross_entropy(logits.float(), labels)


def run_masked(
    model: nn.Module,
    batches: Sequence[Batch],
    optimizer: torch.optim.Optimizer,
    masks: MaskSet,
    plan: DevicePlan,
) -> tuple[float, float]:
    loss, accuracy, _ = train_epoch(model, batches, optimizer, masks, constant_lr, plan)
    return loss, accuracy


def run_dense(
    model: nn.Module,
    batches: Sequence[Batch],
    optimizer: torch.optim.Optimizer,
    masks: MaskSet,
    plan: DevicePlan,
) -> tuple[float, float]:
    """Forward, loss, backward, SGD step; the MaskSet is ignored."""
    del masks
    model.train()
    device = next(model.parameters()).device
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    seen = 0
    for step, (inputs, labels) in enumerate(batches):
        set_lr(optimizer, constant_lr(step))
        logits, loss = forward_loss(model, inputs, labels, plan)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss.detach() * labels.shape[0]
        correct += (logits.detach().argmax(dim=1) == labels).sum()
        seen += labels.shape[0]
    return float(loss_sum) / seen, int(correct) / seen


def freeze_pruned_numpy(weights: Sequence[nn.Parameter], device: torch.device) -> None:
    """Zero, through host NumPy copies, the gradient of every weight that is 0."""
    for p in weights:
        tensor = p.data.cpu().numpy()
        grad_tensor = p.grad.data.cpu().numpy()
        grad_tensor = np.where(tensor == 0, 0, grad_tensor)
        p.grad.data = torch.from_numpy(grad_tensor).to(device)


def run_numpy_copy(
    model: nn.Module,
    batches: Sequence[Batch],
    optimizer: torch.optim.Optimizer,
    masks: MaskSet,
    plan: DevicePlan,
) -> tuple[float, float]:
    """The published loop: freeze pruned weights by zeroing their gradients in NumPy.

    For every prunable weight, after ``backward``: copy the weight and its gradient
    to host NumPy arrays, set the gradient to 0 where the weight is 0, and copy the
    gradient back to the device. Pruned weights then stay exactly 0 under SGD with
    momentum and weight decay, because their gradient, decay term and momentum are
    all 0.
    """
    model.train()
    weights = masks.weights  # the prunable weights of ``model``, in module order
    device = weights[0].device
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    seen = 0
    for step, (inputs, labels) in enumerate(batches):
        set_lr(optimizer, constant_lr(step))
        logits, loss = forward_loss(model, inputs, labels, plan)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        freeze_pruned_numpy(weights, device)
        optimizer.step()
        loss_sum += loss.detach() * labels.shape[0]
        correct += (logits.detach().argmax(dim=1) == labels).sum()
        seen += labels.shape[0]
    return float(loss_sum) / seen, int(correct) / seen


LoopFn = Callable[
    [nn.Module, Sequence[Batch], torch.optim.Optimizer, MaskSet, DevicePlan], tuple[float, float]
]
LOOPS: dict[str, LoopFn] = {MASKED: run_masked, DENSE: run_dense, NUMPY_COPY: run_numpy_copy}


# -- part 1: loop throughput ---------------------------------------------------


@dataclass
class LoopResult:
    name: str
    images_per_s: list[float]
    keeps_zeros: bool

    @property
    def median(self) -> float:
        return statistics.median(self.images_per_s)


@dataclass
class Contender:
    """One loop with its own copy of the pruned model, MaskSet and optimizer."""

    name: str
    model: nn.Module
    masks: MaskSet
    optimizer: torch.optim.Optimizer
    plan: DevicePlan

    def run(self, batches: Sequence[Batch]) -> None:
        LOOPS[self.name](self.model, batches, self.optimizer, self.masks, self.plan)


def make_batches(
    device: torch.device, batch_size: int, count: int, image_size: int = IMAGE_SIZE
) -> list[Batch]:
    """``count`` normalised synthetic batches, prepared up front on the device."""
    splits = load_dataset(
        "synthetic",
        device=device,
        val_fraction=0.0,
        options={
            "num_train": batch_size * count,
            "num_test": NUM_CLASSES,
            "channels": CHANNELS,
            "image_size": image_size,
            "num_classes": NUM_CLASSES,
        },
    )
    batches = list(splits.train.batches(batch_size, shuffle=False, augment=False, seed=0))
    return batches[:count]


def pruned_model(
    name: str, device: torch.device, image_size: int = IMAGE_SIZE
) -> tuple[nn.Module, MaskSet]:
    """``name`` built from seed 0 and pruned to SPARSITY by global magnitude."""
    torch.manual_seed(0)
    model = build_model(
        name, in_channels=CHANNELS, num_classes=NUM_CLASSES, image_size=image_size
    ).to(device)
    masks = MaskSet(prunable_weights(model))
    masks.prune_(SPARSITY, "global_magnitude")
    return model, masks


def make_contender(
    name: str, model: nn.Module, masks: MaskSet, training: TrainingSpec, device: torch.device
) -> Contender:
    """A private copy of the pruned ``model`` (same weights, same masks) for one loop,
    driven as a job with ``training``'s precision and compile settings would be."""
    own = copy.deepcopy(model)
    plan = plan_for(training, device, own)  # before the masks: it may change the layout
    own_masks = MaskSet(prunable_weights(own))
    own_masks.load_state_dict(masks.state_dict())
    return Contender(name, own, own_masks, make_optimizer(own), plan)


def time_loop(contender: Contender, timed: Sequence[Batch], device: torch.device) -> float:
    """Images per second of one pass of ``contender``'s loop over ``timed``."""
    synchronize(device)
    start = time.perf_counter()
    contender.run(timed)
    synchronize(device)
    elapsed = time.perf_counter() - start
    return sum(labels.shape[0] for _, labels in timed) / elapsed


def upkeep_ms(
    contenders: Sequence[Contender], device: torch.device, calls: int
) -> dict[str, float]:
    """Median milliseconds of the per-step work that keeps pruned weights at zero.

    Timed alone, outside the training step: ``MaskSet.apply_`` for the masked loop,
    the NumPy gradient round trip for the published loop (on the gradients its last
    step left behind). The loop figures include this cost among much larger ones.
    """
    by_name = {c.name: c for c in contenders}
    numpy_weights = by_name[NUMPY_COPY].masks.weights
    work: dict[str, Callable[[], None]] = {
        MASKED: by_name[MASKED].masks.apply_,
        NUMPY_COPY: lambda: freeze_pruned_numpy(numpy_weights, device),
    }
    result = {}
    for name, fn in work.items():
        samples = []
        for _ in range(calls):
            synchronize(device)
            start = time.perf_counter()
            fn()
            synchronize(device)
            samples.append(1000 * (time.perf_counter() - start))
        result[name] = statistics.median(samples)
    return result


def keeps_pruned_zero(masks: MaskSet) -> bool:
    return all(is_exactly_zero(w, m) for w, m in zip(masks.weights, masks.masks, strict=True))


def measure_loops(
    model_name: str,
    device: torch.device,
    batch_size: int,
    steps: int,
    warmup_steps: int,
    repeats: int,
    training: TrainingSpec,
) -> tuple[list[LoopResult], float, dict[str, float]]:
    """Interleaved throughput of the three loops, the sparsity, and upkeep times.

    Every loop first takes ``warmup_steps`` untimed steps (allocator, kernel
    selection, momentum buffers), then the loops take turns over the same ``steps``
    batches, ``repeats`` rounds of (masked, dense, numpy-copy). Throughput does not
    depend on the weights' values, so each loop simply keeps training its own copy.
    """
    image_size = MODEL_IMAGE_SIZE.get(model_name, IMAGE_SIZE)
    model, masks = pruned_model(model_name, device, image_size)
    sparsity = masks.sparsity()
    contenders = [make_contender(name, model, masks, training, device) for name in LOOP_NAMES]
    del model, masks

    batches = make_batches(device, batch_size, warmup_steps + steps, image_size)
    warmup, timed = batches[:warmup_steps], batches[warmup_steps:]
    for contender in contenders:
        if warmup:
            contender.run(warmup)
    rates: dict[str, list[float]] = {name: [] for name in LOOP_NAMES}
    for _ in range(repeats):
        for contender in contenders:
            rates[contender.name].append(time_loop(contender, timed, device))
    results = [LoopResult(c.name, rates[c.name], keeps_pruned_zero(c.masks)) for c in contenders]
    return results, sparsity, upkeep_ms(contenders, device, UPKEEP_CALLS)


# -- the paper's job, extrapolated from one real cycle ----------------------------


def paper_job_line(device: torch.device, epochs: int, training: TrainingSpec) -> str:
    """One SILO cycle of ``epochs`` epochs through the real engine (evaluation and
    checkpoint-free bookkeeping included) on CIFAR-10-sized synthetic data, and
    what the paper's whole job would take at that pace."""
    spec = parse_spec(
        {
            "model": {"name": "resnet20"},
            "dataset": {
                "name": "synthetic",
                "options": {"num_train": 50_000, "num_test": 10_000, "image_size": IMAGE_SIZE},
            },
            "pruning": {"method": "global_magnitude", "fraction": 0.2, "cycles": 1},
            "schedule": {"name": "silo", "preset": "resnet20"},
            "training": {
                **training.model_dump(mode="json"),
                "epochs_per_cycle": epochs,
                "dense": {"epochs": 1},
            },
            "device": str(device),
        }
    )
    per_epoch = PruningEngine(spec).run().cycles[1].seconds / epochs
    total = per_epoch * (PAPER_DENSE_EPOCHS + PAPER_CYCLES * PAPER_EPOCHS)
    return (
        f"one SILO job of the paper's shape (resnet20, CIFAR-10-sized, {PAPER_DENSE_EPOCHS} "
        f"dense epochs + {PAPER_CYCLES} cycles x {PAPER_EPOCHS} epochs): {total / 3600:.2f} h, "
        f"from one real cycle of {epochs} epochs at {per_epoch:.1f} s per epoch "
        "(training and evaluation)"
    )


# -- part 2: pruning-step time -------------------------------------------------


@dataclass
class PruneResult:
    name: str
    image_size: int
    num_weights: int
    num_tensors: int
    seconds: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def time_prune_step(
    name: str, image_size: int, num_classes: int, device: torch.device, repeats: int
) -> PruneResult:
    """Median time of ``MaskSet(...).prune_(0.2)`` from the same dense weights each call."""
    torch.manual_seed(0)
    model = build_model(
        name, in_channels=CHANNELS, num_classes=num_classes, image_size=image_size
    ).to(device)
    weights = prunable_weights(model)
    originals = [w.detach().clone() for w in weights.values()]
    seconds: list[float] = []
    for _ in range(repeats):
        with torch.no_grad():
            for weight, original in zip(weights.values(), originals, strict=True):
                weight.copy_(original)
        masks = MaskSet(weights)
        synchronize(device)
        start = time.perf_counter()
        masks.prune_(PRUNE_FRACTION, "global_magnitude")
        synchronize(device)
        seconds.append(time.perf_counter() - start)
    num_weights = sum(w.numel() for w in weights.values())
    return PruneResult(name, image_size, num_weights, len(weights), seconds)


# -- report --------------------------------------------------------------------


def paired_ratio(result: LoopResult, reference: LoopResult) -> float:
    """Median over rounds of ``result / reference``, each pair measured back to back.

    Less sensitive than the ratio of medians to load that drifts during the run.
    """
    return statistics.median(
        a / b for a, b in zip(result.images_per_s, reference.images_per_s, strict=True)
    )


def loop_table(
    results: Sequence[LoopResult], batch_size: int, model_name: str, sparsity: float
) -> Table:
    by_name = {r.name: r for r in results}
    dense = by_name[DENSE].median
    size = MODEL_IMAGE_SIZE.get(model_name, IMAGE_SIZE)
    table = Table(
        title=f"Retraining throughput: {model_name} ({size}x{size}), batch {batch_size}, "
        f"{sparsity:.1%} sparse (median of {len(results[0].images_per_s)} repeats)"
    )
    table.add_column("loop")
    table.add_column("images/s", justify="right")
    table.add_column("min-max images/s", justify="right")
    table.add_column("ms/step", justify="right")
    table.add_column("vs dense", justify="right")
    table.add_column("vs dense, paired", justify="right")
    table.add_column("pruned stay 0", justify="center")
    for result in results:
        table.add_row(
            result.name,
            f"{result.median:,.0f}",
            f"{min(result.images_per_s):,.0f}-{max(result.images_per_s):,.0f}",
            f"{1000 * batch_size / result.median:.1f}",
            f"{result.median / dense:.2f}x",
            f"{paired_ratio(result, by_name[DENSE]):.2f}x",
            "yes" if result.keeps_zeros else "no",
        )
    return table


def prune_table(results: Sequence[PruneResult]) -> Table:
    table = Table(
        title=f"One pruning step: MaskSet(...).prune_({PRUNE_FRACTION})",
        caption=f"global magnitude, median of {len(results[0].seconds)} calls",
    )
    table.add_column("model")
    table.add_column("input", justify="right")
    table.add_column("prunable weights", justify="right")
    table.add_column("tensors", justify="right")
    table.add_column("seconds", justify="right")
    table.add_column("min-max s", justify="right")
    for r in results:
        table.add_row(
            r.name,
            f"{r.image_size}x{r.image_size}",
            f"{r.num_weights:,}",
            str(r.num_tensors),
            f"{r.median:.3f}",
            f"{min(r.seconds):.3f}-{max(r.seconds):.3f}",
        )
    return table


def target_lines(results: Sequence[LoopResult], model_name: str, device: torch.device) -> list[str]:
    by_name = {r.name: r.median for r in results}
    vs_dense = by_name[MASKED] / by_name[DENSE]
    vs_numpy = by_name[MASKED] / by_name[NUMPY_COPY]
    on_gpu = device.type == "cuda"
    lines = [
        f"masked within 10% of dense: {'yes' if vs_dense >= DENSE_TARGET else 'no'} "
        f"({vs_dense:.2f}x)",
        f"masked >= {NUMPY_TARGET:g}x numpy-copy: {'yes' if vs_numpy >= NUMPY_TARGET else 'no'} "
        f"({vs_numpy:.2f}x)" + ("" if on_gpu else " [target applies on a GPU]"),
    ]
    rate_target = GPU_RATE_TARGET.get(model_name)
    if on_gpu and rate_target:
        rate = by_name[MASKED]
        lines.append(
            f"masked >= {rate_target:,} images/s: {'yes' if rate >= rate_target else 'no'} "
            f"({rate:,.0f})"
        )
    return lines


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument(
        "--models",
        default="resnet20",
        help="comma-separated, e.g. resnet20,vgg19,resnet50 (resnet50 at 64x64)",
    )
    parser.add_argument(
        "--paper-job",
        type=int,
        metavar="EPOCHS",
        help="also time one real SILO cycle of EPOCHS epochs (the paper: 50) of resnet20 on "
        "CIFAR-10-sized synthetic data and extrapolate to the paper's whole job",
    )
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=6, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per loop")
    parser.add_argument("--repeats", type=int, default=9, help="interleaved rounds")
    parser.add_argument("--prune-repeats", type=int, default=3, help="timed prune_ calls")
    parser.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16"),
        default="auto",
        help="as training.precision: auto is bf16 autocast on cuda, fp32 on cpu",
    )
    parser.add_argument("--compile", help="a torch.compile backend (e.g. inductor); default off")
    args = parser.parse_args(argv)
    args.models = [name.strip() for name in args.models.split(",") if name.strip()]
    unknown = [name for name in args.models if name not in MODELS.names()]
    if unknown or not args.models:
        parser.error(f"--models: unknown {unknown}; allowed: {', '.join(MODELS.names())}")
    for flag in ("batch_size", "steps", "repeats", "prune_repeats"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be at least 1")
    if args.warmup < 0:
        parser.error("--warmup must be at least 0")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda was asked for but CUDA is not available")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    device = torch.device(args.device)
    console = Console()
    if not console.is_terminal:
        console = Console(width=120)  # keep the tables unwrapped in logs and pipes
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    console.print(
        f"torch {torch.__version__} on {where} ({torch.get_num_threads()} threads); "
        f"{args.warmup} warm-up steps per loop, then {args.repeats} rounds of "
        f"{args.steps} timed steps per loop"
    )

    training = TrainingSpec(precision=args.precision, compile=args.compile or False)
    console.print(
        f"every loop runs as a job with training.precision {args.precision} "
        f"and training.compile {args.compile or 'off'} would (silo_core.engine.device_plan)"
    )
    for model_name in args.models:
        loops, sparsity, upkeep = measure_loops(
            model_name, device, args.batch_size, args.steps, args.warmup, args.repeats, training
        )
        console.print(loop_table(loops, args.batch_size, model_name, sparsity))
        for line in target_lines(loops, model_name, device):
            console.print(line, markup=False, highlight=False)
        console.print(
            f"mask upkeep per step, timed alone (median of {UPKEEP_CALLS}): "
            f"masked apply_ {upkeep[MASKED]:.3f} ms, "
            f"numpy-copy round trip {upkeep[NUMPY_COPY]:.3f} ms",
            markup=False,
            highlight=False,
        )
    if args.paper_job:
        console.print(paper_job_line(device, args.paper_job, training), highlight=False)

    pruning = [
        time_prune_step(name, size, classes, device, args.prune_repeats)
        for name, size, classes in PRUNE_MODELS
    ]
    console.print(prune_table(pruning))


if __name__ == "__main__":
    main()
