"""Real plug-in distributions for the tests: a package folder and its
``<name>-<version>.dist-info`` (METADATA, entry_points.txt), as pip leaves an
installed package, written into a folder that then goes on ``sys.path`` (and on
the Ray workers' PYTHONPATH).

Importable as ``plugin_dists`` from any test: pytest puts tests/ on sys.path for
tests/conftest.py.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from pathlib import Path

# A team's network: a small MLP with the builders' keyword signature.
TEAM_NETS = """
from torch import nn


def build_tiny(*, in_channels, num_classes, image_size):
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(in_channels * image_size * image_size, 32),
        nn.ReLU(),
        nn.Linear(32, num_classes),
    )


def build_nothing(*, in_channels, num_classes, image_size):
    return "not a module"
"""

# A team's data set: two Gaussian blobs of 4x4 one-channel images, from split_seed.
TEAM_DATA = """
import torch

from silo_core.data import DatasetInfo, Splits
from silo_core.data.base import resolve_options
from silo_core.data.memory import InMemorySource, channel_stats


def load_blobs(*, device, root, download, val_fraction, split_seed, options):
    del root, download
    count = resolve_options("team_blobs", options, {"count": 400})["count"]
    generator = torch.Generator().manual_seed(split_seed)
    labels = torch.arange(count) % 2
    images = torch.randn(count, 1, 4, 4, generator=generator)
    images += (labels * 2 - 1).float().view(-1, 1, 1, 1)
    order = torch.randperm(count, generator=generator)
    test, rest = order[: count // 5], order[count // 5 :]
    val_count = max(1, int(len(rest) * val_fraction))
    val, train = rest[:val_count], rest[val_count:]
    mean, std = channel_stats(images[train])

    def source(index):
        return InMemorySource(
            images[index].to(device), labels[index].to(device), mean=mean.to(device),
            std=std.to(device),
        )

    return Splits(
        info=DatasetInfo(in_channels=1, image_size=4, num_classes=2),
        train=source(train), val=source(val), test=source(test), augment_default=False,
    )
"""

# A team's pruning method: the largest weights go first (a deliberately odd rule,
# so a test can tell it ran).
TEAM_PRUNING = """
def prune_largest(masks, fraction, *, seed):
    del seed
    return masks.remove_lowest_([-w.detach().abs() for w in masks.weights], fraction)
"""

TEAM = "silo-team-models"
TEAM_VERSION = "0.1"
BROKEN = "silo-broken-plugin"
BROKEN_VERSION = "0.2"


def write_distribution(
    folder: Path,
    name: str,
    version: str,
    modules: Mapping[str, str],
    entry_points: Mapping[str, Mapping[str, str]],
) -> None:
    """Write distribution ``name`` into ``folder``: ``modules`` maps a module path
    (``pkg/nets.py``) to its source; ``entry_points`` a group to its name -> target."""
    for relative, source in modules.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
    info = folder / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    sections = [
        f"[{group}]\n" + "".join(f"{key} = {target}\n" for key, target in names.items())
        for group, names in entry_points.items()
    ]
    (info / "entry_points.txt").write_text("\n".join(sections))


def write_team_plugins(folder: Path) -> Path:
    """The tests' two plug-in packages: a working one (a model, a data set, a pruning
    method, a builder returning no module) and one whose import raises."""
    write_distribution(
        folder,
        TEAM,
        TEAM_VERSION,
        {
            "silo_team_models/__init__.py": "",
            "silo_team_models/nets.py": TEAM_NETS,
            "silo_team_models/data.py": TEAM_DATA,
            "silo_team_models/pruning.py": TEAM_PRUNING,
        },
        {
            "silo.models": {
                "team_mlp": "silo_team_models.nets:build_tiny",
                "team_nothing": "silo_team_models.nets:build_nothing",
            },
            "silo.datasets": {"team_blobs": "silo_team_models.data:load_blobs"},
            "silo.pruning": {"team_largest": "silo_team_models.pruning:prune_largest"},
        },
    )
    write_distribution(
        folder,
        BROKEN,
        BROKEN_VERSION,
        {
            "silo_broken_plugin/__init__.py": (
                'raise RuntimeError("this plug-in is broken on purpose")\n'
            )
        },
        {"silo.models": {"broken_net": "silo_broken_plugin:build"}},
    )
    return folder


# A job on the team's model and data set: dense + 1 cycle, 2 epochs each.
TEAM_SPEC = {
    "model": {"name": "team_mlp"},
    "dataset": {"name": "team_blobs"},
    "pruning": {"method": "global_magnitude", "fraction": 0.5, "cycles": 1},
    "schedule": {"name": "silo", "preset": "resnet20"},
    "training": {"epochs_per_cycle": 2, "batch_size": 64, "dense": {"epochs": 2, "max_lr": 0.1}},
    "seed": 1,
    "device": "cpu",
}
