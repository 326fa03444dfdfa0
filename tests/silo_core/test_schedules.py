"""SILO's formula at known points and every baseline's LR at its landmarks."""

import itertools
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from silo_core import schedules
from silo_core.schedules import (
    CosineShape,
    OneCycleShape,
    SiloMaxLR,
    WarmupStepDecay,
    s_curve,
)


def test_s_curve_fixed_points():
    for beta in (0.5, 1.0, 5.0, 20.0):
        assert s_curve(0.0, beta) == 0.0
        assert s_curve(0.5, beta) == pytest.approx(0.5)
        assert s_curve(1.0, beta) == 1.0


def test_silo_at_zero_is_offset_and_at_half_is_offset_plus_half_alpha():
    rule = SiloMaxLR(alpha=0.04, offset=0.03, beta=5, delay=0, prune_fraction=0.5)
    assert rule.max_lr(0) == pytest.approx(0.03)
    # delay 0, p 0.5: cycle 1 has x = 0.5.
    assert rule.sparsity_signal(1) == pytest.approx(0.5)
    assert rule.max_lr(1) == pytest.approx(0.03 + 0.04 / 2)


def test_resnet20_preset_matches_published_values():
    sched = schedules.silo_preset("resnet20", prune_fraction=0.2)
    got = [round(sched.max_lr(t), 5) for t in range(6)]
    assert got == [0.03000, 0.03000, 0.03004, 0.03213, 0.04761, 0.06446]


def test_vgg19_preset_range():
    sched = schedules.silo_preset("vgg19")
    assert sched.max_lr(0) == pytest.approx(0.04)
    assert sched.max_lr(200) == pytest.approx(0.10, abs=1e-6)


@given(
    alpha=st.floats(0, 1),
    offset=st.floats(1e-4, 1),
    beta=st.floats(0.1, 20),
    delay=st.integers(0, 5),
    p=st.floats(0.01, 0.99),
)
def test_silo_is_monotone_and_bounded(alpha, offset, beta, delay, p):
    rule = SiloMaxLR(alpha=alpha, offset=offset, beta=beta, delay=delay, prune_fraction=p)
    values = [rule.max_lr(t) for t in range(40)]
    assert all(b >= a - 1e-12 for a, b in itertools.pairwise(values))
    assert all(offset - 1e-12 <= v <= offset + alpha + 1e-12 for v in values)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"alpha": -0.1, "offset": 0.03}, "alpha must be >= 0"),
        ({"alpha": 0.1, "offset": 0.0}, "offset must be > 0"),
        ({"alpha": 0.1, "offset": 0.03, "beta": 0}, "beta must be > 0"),
        ({"alpha": 0.1, "offset": 0.03, "delay": -1}, "delay must be >= 0"),
        ({"alpha": 0.1, "offset": 0.03, "prune_fraction": 1.0}, "p must be in (0, 1)"),
        ({"alpha": 0.1, "offset": 0.03, "prune_fraction": 0.0}, "p must be in (0, 1)"),
    ],
)
def test_silo_parameters_are_validated(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        SiloMaxLR(**kwargs)


def test_unknown_preset_lists_known_ones():
    with pytest.raises(ValueError, match="allowed: resnet20, vgg19"):
        schedules.silo_preset("resnet99")


def test_warmup_step_decay_landmarks():
    shape = WarmupStepDecay(warmup_fraction=0.1, milestones=(0.5, 0.75), gamma=0.1)
    n = 100
    assert shape.factor(0, n) == pytest.approx(0.1)  # 1/10 of the way up
    assert shape.factor(9, n) == pytest.approx(1.0)  # top at the end of warm-up
    assert shape.factor(49, n) == 1.0
    assert shape.factor(50, n) == pytest.approx(0.1)
    assert shape.factor(74, n) == pytest.approx(0.1)
    assert shape.factor(75, n) == pytest.approx(0.01)
    assert shape.factor(99, n) == pytest.approx(0.01)


def test_slr_decays_at_45_and_67_5_percent():
    sched = schedules.slr(max_lr=0.1)
    curve = sched.curve(cycle=3, total_steps=200)
    assert curve[89] == pytest.approx(0.1)
    assert curve[90] == pytest.approx(0.01)
    assert curve[134] == pytest.approx(0.01)
    assert curve[135] == pytest.approx(0.001)
    assert curve[0] < 0.1  # short warm-up
    assert curve[9] == pytest.approx(0.1)


def test_one_cycle_matches_torch_one_cycle_lr():
    total, peak = 57, 0.2
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=peak)
    ref = torch.optim.lr_scheduler.OneCycleLR(
        opt,
        max_lr=peak,
        total_steps=total,
        pct_start=0.1,
        div_factor=100,
        final_div_factor=100,
        anneal_strategy="cos",
        cycle_momentum=False,
    )
    expected = []
    for _ in range(total):
        expected.append(opt.param_groups[0]["lr"])
        opt.step()
        ref.step()
    ours = schedules.clr(max_lr=peak).curve(cycle=1, total_steps=total)
    assert ours == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_clr_landmarks():
    curve = schedules.clr(max_lr=0.1).curve(cycle=2, total_steps=100)
    assert curve[0] == pytest.approx(0.001)
    assert max(curve) == pytest.approx(0.1)
    assert curve.index(max(curve)) == 9
    assert curve[-1] == pytest.approx(0.1 / 100 / 100)


def test_cosine_landmarks():
    shape = CosineShape()
    assert shape.factor(0, 10) == 1.0
    assert shape.factor(5, 10) == pytest.approx(0.5)
    assert shape.factor(9, 10) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.9)))


def test_fine_tune_and_constant_are_flat():
    assert set(schedules.fine_tune().curve(4, 30)) == {1e-3}
    assert set(schedules.constant(max_lr=0.05).curve(0, 30)) == {0.05}


def test_lr_rewind_replays_the_same_curve_every_cycle():
    shape = WarmupStepDecay(0.1, (0.5, 0.75), 0.1)
    sched = schedules.lr_rewind(max_lr=0.1, shape=shape)
    assert sched.curve(1, 80) == sched.curve(7, 80)
    assert max(sched.curve(1, 80)) == pytest.approx(0.1)


def test_silo_cycle_curve_is_scaled_by_its_max_lr():
    sched = schedules.silo_preset("resnet20")
    for cycle in (1, 4, 9):
        curve = sched.curve(cycle, 100)
        assert max(curve) == pytest.approx(sched.max_lr(cycle))
        assert curve[99] == pytest.approx(sched.max_lr(cycle) / 100)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: WarmupStepDecay(milestones=(0.75, 0.5)), "increasing"),
        (lambda: WarmupStepDecay(warmup_fraction=1.0), "warmup_fraction"),
        (lambda: OneCycleShape(pct_start=0.0), "pct_start"),
        (lambda: schedules.constant(max_lr=0.0), "max_lr must be > 0"),
    ],
)
def test_shape_parameters_are_validated(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_step_outside_cycle_is_refused():
    with pytest.raises(ValueError, match="step must be in"):
        WarmupStepDecay().factor(10, 10)
