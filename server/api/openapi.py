"""The OpenAPI document, telling what the server really accepts.

FastAPI's document is amended in four ways:

- A submit body's ``spec`` is validated by ``silo_core.spec.parse_spec`` (so
  its errors name the spec's own fields), which makes it a plain object to
  FastAPI. The document says what it is: the JobSpec's JSON schema, and for
  a study's base spec the same without a required schedule (each of
  ``schedules`` fills it in).
- No string anywhere may hold a NUL (``server/api/routing.py`` refuses it in
  parameters and bodies alike): every free string says so with a pattern, and
  a free-form object (``extras``) holds ``JsonValue``s, which say it too.
- FastAPI's models keep numeric bounds as floats; an integer's bounds are put
  back as integers (exact: every bound is below 2**53).
- The service takes only references as ``model.weights`` (``silo run`` also
  reads a local path), and the document says so with their pattern; the submit
  bodies carry an example, the shipped ``digits-silo`` preset, which also gives
  schema-driven generators a valid body to vary one field of at a time.

Clients and fuzzers then generate and check requests against the rules the
server applies.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from silo_core.presets import load_preset
from silo_core.spec import JobSpec
from silo_core.spec.model import FILE_REFERENCE, JOB_REFERENCE

SCHEMAS = "#/components/schemas/"
NO_NUL = r"^[^\x00]*$"
JSON_VALUE = {
    "description": "Any JSON value whose strings (keys included) hold no NUL character",
    "anyOf": [
        {"type": "null"},
        {"type": "boolean"},
        {"type": "number"},
        {"type": "string", "pattern": NO_NUL},
        {"type": "array", "items": {"$ref": SCHEMAS + "JsonValue"}},
        {
            "type": "object",
            "propertyNames": {"pattern": NO_NUL},
            "additionalProperties": {"$ref": SCHEMAS + "JsonValue"},
        },
    ],
}


def _ecma(pattern: str) -> str:
    """A Python pattern as JSON Schema writes it (no named groups)."""
    return re.sub(r"\(\?P<\w+>", "(", pattern)


SERVICE_WEIGHTS = f"^({_ecma(FILE_REFERENCE)[1:-1]}|{_ecma(JOB_REFERENCE)[1:-1]})$"
_CONSTRAINED = ("pattern", "enum", "const", "format")
_BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")


def _no_null_parameters(document: dict[str, Any]) -> None:
    """A parameter is left out, never null: FastAPI documents an optional one as
    "string or null", and a client would send the text "null"."""
    for operations in document["paths"].values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                schema = parameter["schema"]
                options = [o for o in schema.get("anyOf", []) if o.get("type") != "null"]
                if len(options) == 1 and len(options) < len(schema["anyOf"]):
                    del schema["anyOf"]
                    schema.update(options[0])


def _state_the_rules(node: Any) -> None:
    """NUL-free strings and integral integer bounds, everywhere in the document."""
    if isinstance(node, list):
        for item in node:
            _state_the_rules(item)
        return
    if not isinstance(node, dict):
        return
    kind = node.get("type")
    if kind == "string" and not any(key in node for key in _CONSTRAINED):
        node["pattern"] = NO_NUL
    elif kind == "integer":
        for key in _BOUNDS:
            if isinstance(node.get(key), float) and node[key].is_integer():
                node[key] = int(node[key])
    elif kind == "object" and node.get("additionalProperties", True) is not False:
        node.setdefault("propertyNames", {}).setdefault("pattern", NO_NUL)
        if node.get("additionalProperties", True) is True:
            node["additionalProperties"] = {"$ref": SCHEMAS + "JsonValue"}
    for value in node.values():
        _state_the_rules(value)


def _with_job_spec(document: dict[str, Any]) -> dict[str, Any]:
    schemas = document["components"]["schemas"]
    spec = JobSpec.model_json_schema(ref_template=SCHEMAS + "{model}")
    for name, schema in spec.pop("$defs", {}).items():
        if name in schemas and schemas[name] != schema:
            raise RuntimeError(f"the JobSpec's {name} collides with an API model's name")
        schemas[name] = schema
    schemas["JobSpec"] = spec
    base = copy.deepcopy(spec)
    base["title"] = "StudyBaseSpec"
    base["description"] = "A JobSpec whose schedule and seed each study member sets"
    base["required"] = [name for name in spec["required"] if name != "schedule"]
    schemas["StudyBaseSpec"] = base

    def point(model: str, field: str, target: dict[str, Any]) -> None:
        properties = schemas[model]["properties"]
        properties[field] = {**target, "description": properties[field].get("description", "")}

    weights = schemas["ModelSpec"]["properties"]["weights"]
    weights["anyOf"] = [
        {**option, "pattern": SERVICE_WEIGHTS} if option.get("type") == "string" else option
        for option in weights["anyOf"]
    ]
    example = load_preset("digits-silo").model_dump(mode="json", exclude_defaults=True)
    schemas["JobSubmit"]["examples"] = [{"spec": example, "name": "digits", "tags": ["demo"]}]
    schemas["StudySubmit"]["examples"] = [
        {"spec": example, "schedules": [{"name": "silo"}, {"name": "lr_rewind"}], "seeds": [0]}
    ]
    point("JobSubmit", "spec", {"$ref": SCHEMAS + "JobSpec"})
    point("StudySubmit", "spec", {"$ref": SCHEMAS + "StudyBaseSpec"})
    schedules = schemas["StudySubmit"]["properties"]["schedules"]
    schedules["items"] = copy.deepcopy(spec["properties"]["schedule"])
    return document


def install_openapi(app: FastAPI) -> None:
    """Serve the document above at /openapi.json (built once, on first request)."""

    def document() -> dict[str, Any]:
        if app.openapi_schema is None:
            generated = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            document = _with_job_spec(generated)
            _no_null_parameters(document)
            _state_the_rules(document)
            document["components"]["schemas"]["JsonValue"] = JSON_VALUE
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = document  # type: ignore[method-assign]
