"""What the worker tests share: one local Ray head for the whole session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import ray

from workers.ray_cluster import connect, stop_local_head


@pytest.fixture(scope="session")
def local_ray(tmp_path_factory) -> Iterator[str]:
    """One local Ray head for the test session, on free ports."""
    state = tmp_path_factory.mktemp("ray")
    address = connect(None, state, num_cpus=2)
    yield address
    ray.shutdown()
    stop_local_head(state)  # `ray stop`: this machine runs no other Ray during tests
