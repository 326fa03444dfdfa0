"""What the worker tests share: one local Ray head for the whole session, and a
dispatcher beside the live API."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray
from declared_gpus import GPUS

from server.db.session import make_engine, make_session_factory
from server.dispatch import Dispatcher
from workers.ray_cluster import connect, stop_local_head


@pytest.fixture(scope="session")
def local_ray_state(tmp_path_factory) -> Path:
    """Where the session's Ray head records its addresses."""
    return tmp_path_factory.mktemp("ray")


@pytest.fixture(scope="session")
def local_ray(local_ray_state: Path, plugin_folder: Path) -> Iterator[str]:
    """One local Ray head for the test session, on free ports. Its workers find the
    tests' plug-in packages, as a deployment's workers find those on its image.
    It declares GPUS GPUs that this machine need not have (tests/declared_gpus.py)."""
    with pytest.MonkeyPatch.context() as patch:
        # Only the head's processes inherit it; later subprocesses of the tests do not.
        paths = [str(plugin_folder), *filter(None, [os.environ.get("PYTHONPATH")])]
        patch.setenv("PYTHONPATH", os.pathsep.join(paths))
        address = connect(None, local_ray_state, num_cpus=2, num_gpus=GPUS)
    yield address
    ray.shutdown()
    stop_local_head(local_ray_state)  # this head's processes only


@pytest.fixture
def cancel_grace() -> float:
    return 30.0


@pytest.fixture
def dispatching(live_server, local_ray, cancel_grace) -> Iterator[None]:  # noqa: ARG001
    """A dispatcher beside the live API, as `silo serve` runs one (on the
    session's local Ray, which must be up before it starts), with the live
    server's settings (``live_settings``) but a quick tick."""
    settings = live_server.app.state.settings.model_copy(
        update={"dispatch_interval_seconds": 0.2, "cancel_grace_seconds": cancel_grace}
    )
    engine = make_engine(live_server.database_url)
    dispatcher = Dispatcher(settings, make_session_factory(engine), live_server.base_url)
    stop = threading.Event()
    thread = threading.Thread(target=dispatcher.run, args=(stop,), daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join(timeout=10)
    engine.dispose()
