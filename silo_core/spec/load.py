"""Reading a JobSpec from YAML or JSON, with errors a person can act on."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from silo_core.spec.model import JobSpec


class SpecError(ValueError):
    """A spec that cannot run; ``problems`` holds one line per mistake."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


def _is_union_tag(data: Any, key: Any) -> bool:
    """Pydantic puts the chosen tag of a tagged union into error paths
    (``schedule.silo.alpha``); users wrote ``schedule.alpha``, so drop it."""
    return isinstance(data, Mapping) and data.get("name") == key and key not in data


def format_validation_error(error: ValidationError, data: Any) -> list[str]:
    """``field.path: message (got value)`` for each error pydantic found."""
    lines = []
    for item in error.errors(include_url=False):
        path: list[str] = []
        node = data
        for key in item["loc"]:
            if _is_union_tag(node, key):
                continue
            path.append(str(key))
            if isinstance(node, Mapping):
                node = node.get(key)
            elif isinstance(node, list | tuple) and isinstance(key, int) and key < len(node):
                node = node[key]
            else:
                node = None
        message = item["msg"].removeprefix("Value error, ")
        where = ".".join(path) or "spec"
        got = ""
        if item["type"] not in ("missing", "extra_forbidden") and "input" in item:
            shown = item["input"]
            if not isinstance(shown, Mapping):
                got = f" (got {shown!r})"
        lines.append(f"{where}: {message}{got}")
    return lines


def parse_spec(data: Any) -> JobSpec:
    """Validate already-parsed data; raise SpecError with precise lines."""
    if not isinstance(data, Mapping):
        raise SpecError([f"spec: expected a mapping of fields, got {type(data).__name__}"])
    try:
        return JobSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(format_validation_error(exc, data)) from None


def load_spec(path: str | Path) -> JobSpec:
    """Read a spec file: ``.json`` as JSON, anything else as YAML."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError([f"{path}: cannot read the spec file ({exc.strerror})"]) from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise SpecError(
            [f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}"]
        ) from None
    return parse_spec(data)
