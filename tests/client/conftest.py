"""Fixtures of the client tests: a SiloClient on the live API, and a finished job."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tiny_jobs import SPEC, run_job

from silo_client import SiloClient


@pytest.fixture
def api(live_server) -> Iterator[SiloClient]:
    with SiloClient(live_server.base_url, live_server.tokens["alice"]) as client:
        yield client


@pytest.fixture
def finished_job(live_server, api) -> int:
    """A job that ran to success: events, cycles, artifacts and a log."""
    api.submit(SPEC, name="digits")
    return run_job(live_server)
