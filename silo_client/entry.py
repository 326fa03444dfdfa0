"""The ``silo`` command, assembled from the parts that are installed.

The base install has the client's commands (``submit``, ``list``, ``watch``,
...) and silo_core's torch-free ones (``validate``, ``presets``, ``schema``).
The server's commands (``serve``, ``db``, ``token``, ...) join when the
``server`` extra is installed; without it they stay listed and say, in one
line, which extra to install. A command that reaches for a part that is not
installed (``silo run`` without torch) says the same instead of a traceback.
"""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from silo_client.cli import register_client_commands
from silo_core.cli import app

# The top-level module a part brings -> the extra that installs it.
PART_OF_MODULE = {
    **dict.fromkeys(("torch", "torchvision", "numpy", "sklearn", "safetensors"), "engine"),
    **dict.fromkeys(
        (
            "fastapi",
            "starlette",
            "uvicorn",
            "sqlalchemy",
            "alembic",
            "pydantic_settings",
            "psycopg",
            "prometheus_client",
        ),
        "server",
    ),
    "ray": "worker",
}
SERVER_COMMANDS = ("serve", "dispatcher", "demo", "stop", "audit", "db", "token", "user")

err = Console(stderr=True, soft_wrap=True)


def missing_part(exc: ModuleNotFoundError) -> str | None:
    """The extra that would have installed the module ``exc`` could not find."""
    return PART_OF_MODULE.get((exc.name or "").partition(".")[0])


def install_hint(part: str) -> str:
    return f"this command needs the {part} part: pip install 'silo-service[{part}]'"


def _placeholder(name: str, part: str) -> None:
    """Keep ``name`` in ``silo --help``; running it says what to install."""

    @app.command(
        name,
        help=f"(not installed: needs silo-service[{part}])",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
        add_help_option=False,
    )
    def unavailable() -> None:
        err.print(f"error: silo {name}: {install_hint(part)}", markup=False, highlight=False)
        raise typer.Exit(2)


def _add_server_commands() -> None:
    try:
        from server.cli import register_server_commands
    except ModuleNotFoundError as exc:
        part = missing_part(exc)
        if part is None:
            raise
        for name in SERVER_COMMANDS:
            _placeholder(name, part)
    else:
        register_server_commands(app)


register_client_commands(app)
_add_server_commands()


def main() -> None:
    try:
        app()
    except ModuleNotFoundError as exc:
        part = missing_part(exc)
        if part is None:
            raise
        command = next((arg for arg in sys.argv[1:] if not arg.startswith("-")), "")
        err.print(f"error: silo {command}: {install_hint(part)}", markup=False, highlight=False)
        sys.exit(2)
