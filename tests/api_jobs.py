"""A small job spec and the submit helpers the API tests share.

Importable as ``api_jobs`` from any test: pytest puts tests/ on sys.path for
tests/conftest.py.
"""

from __future__ import annotations

from typing import Any

SPEC = {
    "model": {"name": "mlp"},
    "dataset": {"name": "digits"},
    "pruning": {"method": "global_magnitude", "fraction": 0.2, "cycles": 3},
    "schedule": {"name": "silo", "preset": "resnet20"},
    "training": {"epochs_per_cycle": 2, "dense": {"epochs": 4}},
}


def spec(**changes: Any) -> dict[str, Any]:
    """SPEC with ``section__key=value`` changes, e.g. ``spec(pruning__cycles=5)``."""
    data = {key: dict(value) for key, value in SPEC.items()}
    for path, value in changes.items():
        section, key = path.split("__")
        data[section][key] = value
    return data


def submit(client: Any, expect: int = 201, **body: Any) -> Any:
    """POST /v1/jobs (SPEC unless ``spec`` is given); assert the status; the answer."""
    body.setdefault("spec", SPEC)
    response = client.post("/v1/jobs", json=body)
    assert response.status_code == expect, response.text
    return response.json()
