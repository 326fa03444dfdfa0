"""Behaviour of the model registry in ``silo_core.models``."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from silo_core.models import IncompatibleInputError, UnknownModelError, build_model
from silo_core.models.cifar_resnet import OptionAShortcut
from silo_core.plugins import MODELS

# Natural input for each model: (in_channels, image_size, num_classes).
NATURAL_INPUT = {
    "mlp": (1, 8, 10),
    "lenet5": (1, 8, 10),
    "resnet20": (3, 32, 10),
    "resnet32": (3, 32, 10),
    "resnet56": (3, 32, 10),
    "vgg11": (3, 32, 10),
    "vgg16": (3, 32, 10),
    "vgg19": (3, 32, 10),
    "resnet18": (3, 64, 10),
    "resnet50": (3, 64, 10),
    "vit_b_16": (3, 32, 10),
}
OWN_MODELS = ("mlp", "lenet5", "resnet20", "resnet32", "resnet56", "vgg11", "vgg16", "vgg19")


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def logits(model: nn.Module, in_channels: int, image_size: int, batch: int = 2) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(torch.randn(batch, in_channels, image_size, image_size))


def test_model_names_are_sorted_and_complete():
    assert tuple(sorted(MODELS.names())) == MODELS.names()
    assert set(MODELS.names()) == set(NATURAL_INPUT)


@pytest.mark.parametrize("name", sorted(NATURAL_INPUT))
def test_every_model_gives_logits_for_its_natural_input(name):
    in_channels, image_size, num_classes = NATURAL_INPUT[name]
    model = build_model(
        name, in_channels=in_channels, num_classes=num_classes, image_size=image_size
    )
    assert isinstance(model, nn.Module)
    out = logits(model, in_channels, image_size, batch=3)
    assert out.shape == (3, num_classes)
    assert torch.isfinite(out).all()


def test_resnet20_has_about_0_27m_parameters():
    model = build_model("resnet20", in_channels=3, num_classes=10, image_size=32)
    assert 260_000 <= n_params(model) <= 280_000


def test_resnet20_option_a_shortcuts_have_no_parameters():
    model = build_model("resnet20", in_channels=3, num_classes=10, image_size=32)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    shortcuts = [m for m in model.modules() if isinstance(m, OptionAShortcut)]
    assert len(convs) == 19
    assert len(linears) == 1
    assert len(shortcuts) == 2  # entry of stage 2 and of stage 3
    assert all(n_params(s) == 0 for s in shortcuts)
    # Every parameter sits in a conv, a BatchNorm or the classifier: no 1x1 projections.
    weighted = (nn.Conv2d, nn.BatchNorm2d, nn.Linear)
    counted = sum(n_params(m) for m in model.modules() if isinstance(m, weighted))
    assert counted == n_params(model)


@pytest.mark.parametrize(("name", "convs"), [("resnet32", 31), ("resnet56", 55)])
def test_deeper_cifar_resnets_have_6n_plus_1_convs(name, convs):
    model = build_model(name, in_channels=3, num_classes=10, image_size=32)
    assert sum(isinstance(m, nn.Conv2d) for m in model.modules()) == convs


def test_option_a_shortcut_subsamples_and_pads_with_zeros():
    x = torch.randn(2, 16, 8, 8)
    out = OptionAShortcut(extra_channels=16, stride=2)(x)
    assert out.shape == (2, 32, 4, 4)
    assert torch.equal(out[:, :16], x[:, :, ::2, ::2])
    assert torch.count_nonzero(out[:, 16:]) == 0


def test_vgg19_is_the_cifar_sized_network():
    model = build_model("vgg19", in_channels=3, num_classes=10, image_size=32)
    assert 19_500_000 <= n_params(model) <= 20_500_000
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(512, 10)]


@pytest.mark.parametrize(("name", "convs"), [("vgg11", 8), ("vgg16", 13), ("vgg19", 16)])
def test_vgg_conv_stacks_follow_the_standard_configs(name, convs):
    model = build_model(name, in_channels=3, num_classes=10, image_size=32)
    conv_layers = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(conv_layers) == convs
    assert all(m.kernel_size == (3, 3) for m in conv_layers)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == convs
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 5


@pytest.mark.parametrize("image_size", [1, 8, 9, 28])
@pytest.mark.parametrize("name", ["vgg11", "resnet20"])
def test_cifar_models_take_small_and_odd_image_sizes(name, image_size):
    model = build_model(name, in_channels=1, num_classes=4, image_size=image_size)
    assert logits(model, 1, image_size).shape == (2, 4)


@pytest.mark.parametrize("image_size", [4, 8, 13, 28, 32])
def test_lenet5_takes_any_image_size_from_4(image_size):
    model = build_model("lenet5", in_channels=1, num_classes=10, image_size=image_size)
    assert logits(model, 1, image_size).shape == (2, 10)


def test_mlp_input_width_follows_the_image():
    model = build_model("mlp", in_channels=3, num_classes=5, image_size=6)
    first = next(m for m in model.modules() if isinstance(m, nn.Linear))
    assert first.in_features == 3 * 6 * 6
    assert logits(model, 3, 6).shape == (2, 5)


def test_torchvision_resnet_accepts_one_channel_input():
    model = build_model("resnet18", in_channels=1, num_classes=7, image_size=32)
    assert model.conv1.in_channels == 1
    assert model.conv1.kernel_size == (7, 7)
    assert model.conv1.stride == (2, 2)
    assert model.conv1.bias is None
    assert logits(model, 1, 32).shape == (2, 7)


def test_vit_accepts_other_channel_counts_and_sizes():
    model = build_model("vit_b_16", in_channels=1, num_classes=3, image_size=16)
    assert model.conv_proj.in_channels == 1
    assert model.conv_proj.kernel_size == (16, 16)
    assert logits(model, 1, 16).shape == (2, 3)


def test_unknown_name_error_names_the_bad_name_and_lists_allowed_ones():
    with pytest.raises(UnknownModelError) as info:
        build_model("resnet21", in_channels=3, num_classes=10, image_size=32)
    assert isinstance(info.value, ValueError)
    message = str(info.value)
    assert "resnet21" in message
    for name in MODELS.names():
        assert name in message


@pytest.mark.parametrize(
    ("name", "kwargs", "fragment"),
    [
        ("vit_b_16", {"image_size": 40}, "divisible by 16"),
        ("vit_b_16", {"image_size": 8}, "at least 16"),
        ("lenet5", {"image_size": 3}, "at least 4"),
        ("resnet20", {"image_size": 0}, "image_size of at least 1"),
        ("mlp", {"in_channels": 0}, "in_channels of at least 1"),
    ],
)
def test_incompatible_input_raises_a_clear_error(name, kwargs, fragment):
    args = {"in_channels": 3, "num_classes": 10, "image_size": 32} | kwargs
    with pytest.raises(IncompatibleInputError, match=fragment) as info:
        build_model(name, **args)
    assert isinstance(info.value, ValueError)
    assert name in str(info.value)


def test_non_positive_class_count_is_rejected():
    with pytest.raises(ValueError, match="num_classes"):
        build_model("mlp", in_channels=1, num_classes=0, image_size=8)


def test_non_int_size_is_rejected():
    with pytest.raises(TypeError, match="image_size"):
        build_model("mlp", in_channels=1, num_classes=10, image_size=8.0)


@pytest.mark.parametrize("name", ["mlp", "lenet5", "resnet20", "vgg11", "resnet18"])
def test_same_seed_builds_identical_models(name):
    in_channels, image_size, num_classes = NATURAL_INPUT[name]
    kwargs = {"in_channels": in_channels, "num_classes": num_classes, "image_size": image_size}
    torch.manual_seed(1234)
    first = build_model(name, **kwargs).state_dict()
    torch.manual_seed(1234)
    second = build_model(name, **kwargs).state_dict()
    torch.manual_seed(4321)
    other = build_model(name, **kwargs).state_dict()
    assert first.keys() == second.keys()
    assert all(torch.equal(first[key], second[key]) for key in first)
    assert any(not torch.equal(first[key], other[key]) for key in first)


@pytest.mark.parametrize("name", OWN_MODELS)
def test_own_models_have_no_dropout(name):
    in_channels, image_size, num_classes = NATURAL_INPUT[name]
    model = build_model(
        name, in_channels=in_channels, num_classes=num_classes, image_size=image_size
    )
    assert not any(isinstance(m, nn.modules.dropout._DropoutNd) for m in model.modules())
