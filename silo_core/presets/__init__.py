"""Named job presets shipped with the package (YAML files beside this module)."""

from __future__ import annotations

from importlib import resources

import yaml

from silo_core.spec import JobSpec, parse_spec


def preset_names() -> list[str]:
    folder = resources.files(__name__)
    return sorted(
        p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml")
    )


def load_preset(name: str) -> JobSpec:
    """The preset's spec; unknown names raise ValueError listing the known ones."""
    if name not in preset_names():
        raise ValueError(f"unknown preset {name!r}; allowed: {', '.join(preset_names())}")
    text = resources.files(__name__).joinpath(f"{name}.yaml").read_text()
    return parse_spec(yaml.safe_load(text))
