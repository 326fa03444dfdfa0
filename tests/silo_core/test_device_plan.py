"""The device plan: fp32 eager on the CPU by default, bf16 and channels_last on a
GPU, torch.compile on request with an eager fallback."""

from __future__ import annotations

import logging

import pytest
import torch

from silo_core.engine.device_plan import plan_for
from silo_core.engine.runner import PruningEngine
from silo_core.models import build_model
from silo_core.spec import SpecError, TrainingSpec, parse_spec

SPEC = {
    "model": {"name": "mlp"},
    "dataset": {"name": "digits"},
    "pruning": {"fraction": 0.5, "cycles": 1},
    "schedule": {"name": "silo"},
    "training": {"epochs_per_cycle": 2, "batch_size": 64, "dense": {"epochs": 2}},
    "seed": 4,
    "device": "cpu",
}


def run(**training) -> list[dict]:
    spec = parse_spec({**SPEC, "training": {**SPEC["training"], **training}})
    rows = PruningEngine(spec).run().cycles
    return [{k: v for k, v in r.to_dict().items() if k != "seconds"} for r in rows]


def conv_net() -> torch.nn.Module:
    return build_model("resnet20", in_channels=3, num_classes=10, image_size=32)


def test_the_cpu_default_is_plain_fp32_in_eager_mode():
    plan = plan_for(TrainingSpec(), torch.device("cpu"), conv_net())
    assert (plan.autocast_dtype, plan.channels_last, plan.compiled) == (None, False, None)


def test_a_gpu_gets_bf16_autocast_and_channels_last_for_a_conv_net():
    model = conv_net()  # the plan is decided without touching the GPU
    plan = plan_for(TrainingSpec(), torch.device("cuda"), model)
    assert plan.autocast_dtype == torch.bfloat16 and plan.channels_last
    first_conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert first_conv.weight.is_contiguous(memory_format=torch.channels_last)
    mlp = build_model("mlp", in_channels=1, num_classes=10, image_size=8)
    assert not plan_for(TrainingSpec(), torch.device("cuda"), mlp).channels_last
    fp32 = plan_for(TrainingSpec(precision="fp32"), torch.device("cuda"), conv_net())
    assert fp32.autocast_dtype is None


def test_bf16_on_the_cpu_computes_in_bf16_and_still_learns():
    plan = plan_for(TrainingSpec(precision="bf16"), torch.device("cpu"), conv_net())
    with plan.precision(torch.device("cpu")):
        logits = plan.forward(conv_net(), torch.randn(2, 3, 32, 32))
    assert logits.dtype == torch.bfloat16
    rows = run(precision="bf16")
    assert rows[0]["best_val_accuracy"] > 0.7
    assert rows != run()  # bf16 really changed the arithmetic


def test_a_model_that_does_not_compile_trains_eagerly_after_one_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="silo.engine"):
        rows = run(compile="no_such_backend")
    warnings = [r for r in caplog.records if "torch.compile" in r.getMessage()]
    assert len(warnings) == 1 and "no_such_backend" in warnings[0].getMessage()
    assert rows == run()  # the fallback is exactly the eager job


def test_a_compiled_model_trains_like_the_eager_one():
    # aot_eager traces and compiles through AOTAutograd without generating C++.
    compiled, eager = run(compile="aot_eager"), run()
    for a, b in zip(compiled, eager, strict=True):
        assert a["max_lr"] == b["max_lr"]
        assert a["best_val_accuracy"] == pytest.approx(b["best_val_accuracy"], abs=0.03)


def test_precision_and_compile_are_checked():
    for training, needle in (
        ({"precision": "fp8"}, "precision"),
        ({"compile": "Not A Backend!"}, "compile"),
    ):
        with pytest.raises(SpecError, match=needle):
            parse_spec({**SPEC, "training": {**SPEC["training"], **training}})
