"""``silo demo``: the service end to end on the embedded default.

Starts the server in the background (SQLite, a local Ray, the data in
``SILO_DATA_DIR``) unless one already answers, submits a small study (SILO
against learning-rate rewinding on scikit-learn's digits, two seeds), shows a
live bar per member job, prints the comparison table, and leaves the server
running for the dashboard (``silo stop`` ends it).
"""

from __future__ import annotations

from typing import Any

from rich.console import Console

from server import background
from server.settings import Settings
from silo_client import SiloClient
from silo_client.config import resolve
from silo_client.render import comparison_table
from silo_client.watch import wait_study

# Four prune-retrain cycles of 50% each (to 93.75% sparsity): seconds per job.
DEMO_SPEC: dict[str, Any] = {
    "model": {"name": "mlp"},
    "dataset": {"name": "digits"},
    "pruning": {"method": "global_magnitude", "fraction": 0.5, "cycles": 4},
    "schedule": {"name": "silo", "preset": "resnet20"},
    "training": {"epochs_per_cycle": 10, "batch_size": 64, "dense": {"epochs": 20, "max_lr": 0.1}},
    "seed": 0,
    "device": "cpu",
}
DEMO_SCHEDULES: list[dict[str, Any]] = [
    {"name": "silo", "preset": "resnet20"},
    {"name": "lr_rewind"},
]
DEMO_SEEDS = [0, 1]


class DemoError(RuntimeError):
    """What stopped the demo, in one line for the user."""


def run_demo(settings: Settings, port: int, console: Console) -> bool:
    """Run the demo study through the service; whether every member job succeeded."""
    url = f"http://127.0.0.1:{port}"
    if background.answers(url):
        console.print(f"using the SILO server that answers at {url}")
    else:
        console.print(
            f"starting the SILO server at {url} in the background "
            f"(SQLite and a local Ray; data in {settings.data_dir}) ..."
        )
        try:
            background.start(settings, port)
        except background.ServerStartError as exc:
            raise DemoError(str(exc)) from None
    config = resolve(server=url)
    if config.token is None:
        raise DemoError(
            f"no API token for {url}: set SILO_TOKEN, or create one with `silo token create`"
        )
    with SiloClient(url, config.token) as client:
        study = client.submit_study(
            DEMO_SPEC,
            schedules=DEMO_SCHEDULES,
            seeds=DEMO_SEEDS,
            name="demo: silo vs lr_rewind on digits",
        )
        console.print(
            f"study {study.id}: {' and '.join(study.schedules)} x seeds "
            f"{', '.join(map(str, study.seeds))} ({len(study.members)} jobs)"
        )
        study = wait_study(client, study.id, console)
    console.print(comparison_table(study))
    console.print(
        f"dashboard: {url}/#/studies/{study.id}  (sign in with the token in {config.token_source})",
        highlight=False,
    )
    console.print(
        f"the server keeps running (log: {background.log_file(settings)}); "
        "stop it with `.venv/bin/silo stop`",
        highlight=False,
    )
    return set(study.status) == {"succeeded"}
