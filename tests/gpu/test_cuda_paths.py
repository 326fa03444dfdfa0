"""The GPU paths, run where CUDA is: data on the device, no host sync per step, bf16 and
channels_last, torch.compile, and a whole job.

CI has no GPU, so this module is skipped there; `bench/gpu_check.sh` runs it on a lent
GPU machine. The same code paths run on the CPU in tests/silo_core (bf16 autocast, the
compile fallback, the in-memory data path), so what is checked here is what only a GPU
can show.
"""

from __future__ import annotations

import itertools
import warnings

import pytest
import torch
from data_files import accept_fake_cifar, write_fake_cifar10, write_image_tree

from silo_core.data import load_dataset
from silo_core.engine.device_plan import plan_for
from silo_core.engine.runner import PruningEngine
from silo_core.engine.training import train_epoch
from silo_core.models import build_model
from silo_core.pruning import MaskSet, prunable_weights
from silo_core.spec import TrainingSpec, parse_spec

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

CUDA = torch.device("cuda")
SYNTHETIC = {"num_train": 2048, "num_test": 512, "image_size": 32}


def pruned_resnet20(training: TrainingSpec):
    model = build_model("resnet20", in_channels=3, num_classes=10, image_size=32).to(CUDA)
    plan = plan_for(training, CUDA, model)
    masks = MaskSet(prunable_weights(model))
    masks.prune_(0.5)
    masks.apply_()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    return model, plan, masks, optimizer


def pruned_stay_zero(masks: MaskSet) -> bool:
    return all(
        bool((w[m == 0] == 0).all()) for w, m in zip(masks.weights, masks.masks, strict=True)
    )


def host_syncs_in_an_epoch(train, batch_size: int, steps: int, **kwargs) -> int:
    """How many times one epoch of ``steps`` batches waits for the GPU."""
    model, plan, masks, optimizer = pruned_resnet20(TrainingSpec())
    train_epoch(model, train.batches(batch_size, **kwargs), optimizer, masks, lambda _: 0.05, plan)
    torch.cuda.synchronize()  # warmed up: cuDNN's choices and the allocator are settled
    batches = itertools.islice(train.batches(batch_size, **kwargs), steps)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            train_epoch(model, batches, optimizer, masks, lambda _: 0.05, plan)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchronizing" in str(w.message) for w in caught)


def test_the_in_memory_data_sets_live_on_the_gpu_and_cifar_stays_uint8(tmp_path, monkeypatch):
    accept_fake_cifar(monkeypatch)
    write_fake_cifar10(tmp_path)
    cifar = load_dataset("cifar10", device=CUDA, root=str(tmp_path))
    assert cifar.train.stored_dtype == torch.uint8 and cifar.train.device.type == "cuda"
    inputs, labels = next(cifar.train.batches(32, shuffle=True, augment=True, seed=1))
    assert inputs.is_cuda and labels.is_cuda and inputs.dtype == torch.float32
    again, _ = next(cifar.train.batches(32, shuffle=True, augment=True, seed=1))
    assert torch.equal(inputs, again)  # order and crops come from the seed alone
    synthetic = load_dataset("synthetic", device=CUDA, options=SYNTHETIC)
    assert next(synthetic.test.batches(64, shuffle=False, augment=False, seed=0))[0].is_cuda


def test_masked_training_waits_for_the_gpu_only_to_read_the_epoch_totals():
    train = load_dataset("synthetic", device=CUDA, options=SYNTHETIC).train
    kwargs = {"shuffle": True, "augment": True, "seed": 3}
    short = host_syncs_in_an_epoch(train, 128, 2, **kwargs)
    long = host_syncs_in_an_epoch(train, 128, 12, **kwargs)
    assert short >= 1  # reading the epoch's loss and accuracy does wait: the probe works
    assert long == short, f"{long - short} more host syncs for 10 more steps"


def test_bf16_and_channels_last_train_and_keep_pruned_weights_zero():
    train = load_dataset("synthetic", device=CUDA, options=SYNTHETIC).train
    model, plan, masks, optimizer = pruned_resnet20(TrainingSpec())
    assert plan.autocast_dtype == torch.bfloat16 and plan.channels_last
    losses = [
        train_epoch(
            model,
            train.batches(128, shuffle=True, augment=False, seed=epoch),
            optimizer,
            masks,
            lambda _: 0.05,
            plan,
        )[0]
        for epoch in range(3)
    ]
    assert losses[-1] < losses[0]
    assert pruned_stay_zero(masks)


def test_torch_compile_trains_on_the_gpu_without_falling_back():
    train = load_dataset("synthetic", device=CUDA, options=SYNTHETIC).train
    model, plan, masks, optimizer = pruned_resnet20(TrainingSpec(compile=True))
    loss, _, _ = train_epoch(
        model,
        train.batches(256, shuffle=True, augment=False, seed=0),
        optimizer,
        masks,
        lambda _: 0.05,
        plan,
    )
    assert plan.compiled is not None and plan.compiled.compiled, "fell back to eager"
    assert loss == loss and pruned_stay_zero(masks)  # finite, masks held


def test_an_image_tree_streams_to_the_gpu_through_pinned_workers(tmp_path):
    write_image_tree(tmp_path)
    splits = load_dataset(
        "imagefolder", device=CUDA, root=str(tmp_path), options={"image_size": 8, "workers": 2}
    )
    inputs, labels = next(splits.train.batches(4, shuffle=True, augment=True, seed=0))
    assert inputs.is_cuda and labels.is_cuda and inputs.shape == (4, 3, 8, 8)


def test_a_whole_job_runs_on_the_gpu():
    spec = parse_spec(
        {
            "model": {"name": "resnet20"},
            "dataset": {"name": "synthetic", "options": SYNTHETIC},
            "pruning": {"fraction": 0.2, "cycles": 2},
            "schedule": {"name": "silo", "preset": "resnet20"},
            "training": {"epochs_per_cycle": 2, "batch_size": 256, "dense": {"epochs": 2}},
            "device": "cuda",
        }
    )
    cycles = PruningEngine(spec).run().cycles
    assert [round(c.sparsity, 2) for c in cycles] == [0.0, 0.2, 0.36]
    assert cycles[-1].final_test_accuracy > 0.5  # synthetic classes are easy to tell apart
