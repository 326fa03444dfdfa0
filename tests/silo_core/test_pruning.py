"""Magnitude, layer-wise and random pruning; masks that hold through training."""

import pytest
import torch
from torch import nn

from silo_core.pruning import MaskSet, is_exactly_zero, prunable_weights, smallest_k


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc1 = nn.Linear(8 * 4 * 4, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = nn.functional.max_pool2d(torch.relu(self.conv2(x)), 2)
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


@pytest.fixture
def model():
    torch.manual_seed(0)
    return Tiny()


def test_only_conv_and_linear_weights_are_prunable(model):
    names = list(prunable_weights(model))
    assert names == ["conv1.weight", "conv2.weight", "fc1.weight", "fc2.weight"]


def test_first_conv_and_last_linear_can_be_kept_dense(model):
    names = list(prunable_weights(model, keep_first_conv_dense=True, keep_last_linear_dense=True))
    assert names == ["conv2.weight", "fc1.weight"]


@pytest.mark.parametrize("method", ["global_magnitude", "layerwise_magnitude", "random"])
def test_each_cycle_removes_fraction_of_alive_weights(model, method):
    masks = MaskSet(prunable_weights(model))
    alive = masks.total()
    for cycle in range(1, 8):
        removed = masks.prune_(0.2, method, seed=cycle)
        if method == "layerwise_magnitude":
            # Rounded per layer: within one weight per layer of the global count.
            assert abs(removed - round(0.2 * alive)) <= len(masks.masks)
        else:
            assert removed == round(0.2 * alive)
        assert masks.alive() == alive - removed
        alive -= removed
    assert masks.sparsity() == pytest.approx(1 - 0.8**7, abs=0.01)


def test_global_magnitude_removes_the_globally_smallest(model):
    with torch.no_grad():  # every conv2 weight is larger than any other weight
        model.conv2.weight.copy_(model.conv2.weight.sign() * (10 + model.conv2.weight.abs()))
    masks = MaskSet(prunable_weights(model))
    masks.prune_(0.3, "global_magnitude")
    sparsity = masks.layer_sparsity()
    assert sparsity["conv2.weight"] == 0.0
    kept = torch.cat([w[m.bool()].abs() for w, m in zip(masks.weights, masks.masks, strict=False)])
    dropped = torch.cat(
        [p.abs().flatten() for p in (model.conv1.weight, model.fc1.weight, model.fc2.weight)]
    )
    # Every removed weight is now zero and none was larger than the smallest survivor.
    assert int((dropped == 0).sum()) == round(0.3 * masks.total())
    assert kept.min() > 0


def test_layerwise_prunes_every_layer_by_the_same_fraction(model):
    with torch.no_grad():
        model.conv2.weight.mul_(100.0)
    masks = MaskSet(prunable_weights(model))
    masks.prune_(0.5, "layerwise_magnitude")
    for name, value in masks.layer_sparsity().items():
        assert value == pytest.approx(0.5, abs=0.01), name


def test_excluded_layers_bn_and_biases_are_untouched(model):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    masks = MaskSet(
        prunable_weights(model, keep_first_conv_dense=True, keep_last_linear_dense=True)
    )
    for cycle in range(5):
        masks.prune_(0.5, "global_magnitude", seed=cycle)
    after = model.state_dict()
    for key in ("conv1.weight", "fc2.weight", "bn1.weight", "bn1.bias", "conv1.bias", "fc1.bias"):
        assert torch.equal(before[key], after[key]), key
    assert float((after["fc1.weight"] == 0).float().mean()) > 0.9


def test_ties_are_broken_to_remove_exactly_k():
    scores = torch.ones(10)
    alive = torch.ones(10, dtype=torch.bool)
    drop = smallest_k(scores, alive, 3)
    assert int(drop.sum()) == 3
    assert drop.tolist()[:3] == [True, True, True]


def test_dead_weights_are_never_chosen_again():
    scores = torch.tensor([0.0, 0.0, 5.0, 1.0, 2.0])
    alive = torch.tensor([False, False, True, True, True])
    assert smallest_k(scores, alive, 2).tolist() == [False, False, False, True, True]
    with pytest.raises(ValueError, match="only 3 are alive"):
        smallest_k(scores, alive, 4)


def test_random_pruning_depends_on_seed_only(model):
    a = MaskSet(prunable_weights(model))
    a.prune_(0.5, "random", seed=1)
    state_a = a.state_dict()
    torch.manual_seed(0)
    b = MaskSet(prunable_weights(Tiny()))
    b.prune_(0.5, "random", seed=1)
    c = MaskSet(prunable_weights(Tiny()))
    c.prune_(0.5, "random", seed=2)
    assert all(torch.equal(state_a[k], v) for k, v in b.state_dict().items())
    assert not all(torch.equal(state_a[k], v) for k, v in c.state_dict().items())


@pytest.mark.parametrize("optimizer_name", ["sgd", "adamw"])
def test_pruned_weights_stay_exactly_zero_through_training(model, optimizer_name):
    masks = MaskSet(prunable_weights(model))
    if optimizer_name == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=1e-2)
    x, y = torch.randn(64, 1, 8, 8), torch.randint(0, 10, (64,))
    for cycle in range(3):
        masks.prune_(0.4, "global_magnitude")
        for _ in range(40):  # momentum from before the pruning keeps pushing
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            masks.apply_()
            for weight, mask in zip(masks.weights, masks.masks, strict=False):
                assert is_exactly_zero(weight, mask), f"cycle {cycle}"
    # And the surviving weights did train.
    assert float(masks.weights[2].detach()[masks.masks[2].bool()].abs().sum()) > 0


def test_mask_state_round_trips_and_rejects_other_models(model):
    masks = MaskSet(prunable_weights(model))
    masks.prune_(0.5)
    state = masks.state_dict()
    assert all(v.dtype == torch.bool for v in state.values())
    torch.manual_seed(1)
    other = MaskSet(prunable_weights(Tiny()))
    other.load_state_dict(state)
    assert other.alive() == masks.alive()
    with pytest.raises(ValueError, match="missing"):
        MaskSet(prunable_weights(Tiny(), keep_first_conv_dense=True)).load_state_dict(state)


def test_bad_fraction_and_method_are_refused(model):
    masks = MaskSet(prunable_weights(model))
    with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\)"):
        masks.prune_(1.0)
    with pytest.raises(ValueError, match="allowed: global_magnitude, layerwise_magnitude, random"):
        masks.prune_(0.2, "movement")


def test_alive_counts_exactly_beyond_float32_integers():
    from torch import nn

    from silo_core.pruning import MaskSet

    layer = nn.Linear(4097, 4097, bias=False)  # 16,785,409 weights: more than 2**24
    masks = MaskSet({"weight": layer.weight})
    assert masks.alive() == 4097 * 4097
    masks.masks[0].view(-1)[:3] = 0
    assert masks.alive() == 4097 * 4097 - 3
