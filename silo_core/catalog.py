"""What this installation can run: every name a spec may use, and where it comes from.

Read from the plug-ins' metadata and the spec's own declarations, so it imports
neither torch nor any plug-in's code (the API server answers ``GET /v1/catalog``
with it).
"""

from __future__ import annotations

from typing import Any, get_args

from silo_core.plugins import BUILTIN, REGISTRIES
from silo_core.presets import preset_names
from silo_core.spec import ScheduleSpec


def schedule_names() -> list[str]:
    """The ``name`` of each member of the spec's schedule union, in declared order."""
    union = get_args(ScheduleSpec)[0]
    return [get_args(member.model_fields["name"].annotation)[0] for member in get_args(union)]


def catalog() -> dict[str, list[dict[str, Any]]]:
    """Each family's names with their origin (``{"source": "builtin"}`` or
    ``{"source": "plugin", "distribution": ..., "version": ...}``)."""
    found = {
        family: [
            {"name": name, "origin": entry.origin.as_dict()}
            for name, entry in registry.entries().items()
        ]
        for family, registry in REGISTRIES.items()
    }
    builtin = BUILTIN.as_dict()
    found["schedules"] = [{"name": name, "origin": builtin} for name in schedule_names()]
    found["presets"] = [{"name": name, "origin": builtin} for name in preset_names()]
    return found
