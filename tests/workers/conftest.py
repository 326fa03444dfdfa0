"""What the worker tests share: one local Ray head for the whole session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import ray

from workers.ray_cluster import connect, stop_local_head


@pytest.fixture(scope="session")
def local_ray_state(tmp_path_factory) -> Path:
    """Where the session's Ray head records its addresses."""
    return tmp_path_factory.mktemp("ray")


@pytest.fixture(scope="session")
def local_ray(local_ray_state: Path) -> Iterator[str]:
    """One local Ray head for the test session, on free ports."""
    address = connect(None, local_ray_state, num_cpus=2)
    yield address
    ray.shutdown()
    stop_local_head(local_ray_state)  # this head's processes only
