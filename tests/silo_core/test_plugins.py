"""Plug-ins: real distributions (a package and its .dist-info) on sys.path,
found through their entry points, checked without importing them, used by name
like the built-ins, and named when they fail."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from plugin_dists import BROKEN, BROKEN_VERSION, TEAM, TEAM_SPEC, TEAM_VERSION, write_distribution

from silo_core import plugins
from silo_core.catalog import catalog
from silo_core.data import Splits, load_dataset
from silo_core.models import UnknownModelError, build_model
from silo_core.pruning import MaskSet, prunable_weights
from silo_core.spec import SpecError, parse_spec

CPU = torch.device("cpu")
TEAM_ORIGIN = {"source": "plugin", "distribution": TEAM, "version": TEAM_VERSION}


@pytest.fixture
def site(tmp_path, monkeypatch) -> Iterator[Path]:
    """An empty folder on sys.path, for a test's own distributions."""
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    plugins.refresh()


@pytest.mark.usefixtures("team_plugins")
def test_plugins_are_listed_with_their_distribution_and_used_like_builtins():
    found = catalog()
    assert {"name": "team_mlp", "origin": TEAM_ORIGIN} in found["models"]
    assert {"name": "team_blobs", "origin": TEAM_ORIGIN} in found["datasets"]
    assert {"name": "team_largest", "origin": TEAM_ORIGIN} in found["pruning_methods"]
    assert {"name": "mlp", "origin": {"source": "builtin"}} in found["models"]

    spec = parse_spec(TEAM_SPEC)
    splits = load_dataset(spec.dataset.name, device=CPU, val_fraction=0.1, split_seed=0)
    assert isinstance(splits, Splits)
    assert splits.info.num_classes == 2
    model = build_model("team_mlp", in_channels=1, num_classes=2, image_size=4)
    inputs, _ = next(splits.test.batches(8, shuffle=False, augment=False, seed=0))
    assert model(inputs).shape == (8, 2)

    masks = MaskSet(prunable_weights(model))
    largest = max(float(w.detach().abs().max()) for w in masks.weights)
    assert masks.prune_(0.5, "team_largest") == masks.total() // 2
    # The plug-in's own rule ran: the largest weight went first.
    assert max(float(w.detach().abs().max()) for w in masks.weights) < largest


@pytest.mark.usefixtures("team_plugins")
def test_an_unknown_name_is_refused_naming_the_field_and_listing_plugins_too():
    with pytest.raises(SpecError) as info:
        parse_spec({**TEAM_SPEC, "model": {"name": "team_mpl"}})
    message = str(info.value)
    assert "model.name: unknown model 'team_mpl'; allowed: " in message
    assert "team_mlp" in message and "resnet20" in message
    with pytest.raises(UnknownModelError, match="team_mlp"):
        build_model("team_mpl", in_channels=1, num_classes=2, image_size=4)


@pytest.mark.usefixtures("team_plugins")
def test_a_plugin_that_fails_to_import_is_named_with_its_distribution():
    parse_spec({**TEAM_SPEC, "model": {"name": "broken_net"}})  # metadata only: valid
    with pytest.raises(plugins.PluginError) as info:
        build_model("broken_net", in_channels=1, num_classes=2, image_size=4)
    message = str(info.value)
    assert "plug-in model 'broken_net'" in message
    assert "broken_net = silo_broken_plugin:build" in message
    assert f"distribution {BROKEN} {BROKEN_VERSION}" in message
    assert "failed to import: RuntimeError: this plug-in is broken on purpose" in message
    assert isinstance(info.value.__cause__, RuntimeError)  # its traceback stays chained


@pytest.mark.usefixtures("team_plugins")
def test_a_builder_returning_no_module_fails_naming_the_plugin():
    with pytest.raises(plugins.PluginError, match=r"'team_nothing'.*failed to build: .*str"):
        build_model("team_nothing", in_channels=1, num_classes=2, image_size=4)


def test_a_plugin_may_not_replace_a_builtin(site, caplog):
    write_distribution(
        site,
        "silo-usurper",
        "1.0",
        {"silo_usurper.py": "def build(**_):\n    raise AssertionError('must not run')\n"},
        {"silo.models": {"mlp": "silo_usurper:build"}},
    )
    plugins.refresh()
    with caplog.at_level(logging.WARNING, logger="silo.plugins"):
        entry = plugins.MODELS.get("mlp")
    assert entry.origin.builtin
    assert "silo-usurper 1.0" in caplog.text and "may not replace a built-in" in caplog.text
    assert build_model("mlp", in_channels=1, num_classes=2, image_size=4) is not None


def test_two_plugins_declaring_one_name_make_it_unusable(site, caplog):
    for dist in ("silo-twin-a", "silo-twin-b"):
        module = dist.replace("-", "_")
        write_distribution(
            site,
            dist,
            "0.1",
            {f"{module}.py": "def build(**_):\n    pass\n"},
            {"silo.models": {"twin": f"{module}:build"}},
        )
    plugins.refresh()
    with caplog.at_level(logging.WARNING, logger="silo.plugins"):
        names = plugins.MODELS.names()
    assert "twin" not in names
    assert "silo-twin-a 0.1 and silo-twin-b 0.1" in caplog.text
    with pytest.raises(SpecError, match=r"model.name: model 'twin' is declared by two plug-ins"):
        parse_spec({**TEAM_SPEC, "model": {"name": "twin"}})
