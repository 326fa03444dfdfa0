"""The full ``silo`` command: silo_core's local commands plus the service's."""

from __future__ import annotations

import re
import threading
from typing import Annotated, Literal

import typer
from pydantic import ValidationError
from rich.console import Console

from server.settings import Settings, get_settings, settings_problems
from silo_client.cli import register_client_commands
from silo_core.cli import app

err = Console(stderr=True, soft_wrap=True)
db_app = typer.Typer(help="The service's database.", no_args_is_help=True)
token_app = typer.Typer(help="API tokens.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(token_app, name="token")
register_client_commands(app)

# server.serving.HTTP_IMPLEMENTATIONS, named here so `silo --help` need not import uvicorn
HttpImplementation = Literal["auto", "httptools", "h11"]
USER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def _settings() -> Settings:
    """The SILO_* settings, or exit 2 naming each variable that is wrong."""
    try:
        return get_settings()
    except ValidationError as exc:
        for problem in settings_problems(exc):
            err.print(f"error: {problem}", markup=False, highlight=False)
        raise typer.Exit(2) from None


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply every pending migration to SILO_DATABASE_URL."""
    from server.db.migrate import head_revision, upgrade

    url = _settings().resolved_database_url()
    upgrade(url)
    typer.echo(f"database at revision {head_revision()}")


@db_app.command("current")
def db_current() -> None:
    """Print the database's schema revision and whether it is current."""
    from server.db.migrate import current_revision, head_revision
    from server.db.session import make_engine

    engine = make_engine(_settings().resolved_database_url())
    current, head = current_revision(engine), head_revision()
    typer.echo(f"{current or 'empty'} (head {head}{', current' if current == head else ''})")
    if current != head:
        raise typer.Exit(1)


@token_app.command("create")
def token_create(
    user: Annotated[str, typer.Option(help="User name; created if new")],
    admin: Annotated[bool, typer.Option(help="Give the user admin rights")] = False,
) -> None:
    """Create an API token and print it once (only its hash is stored)."""
    from server.auth.tokens import create_user_token
    from server.db.migrate import SchemaBehindError, check_schema
    from server.db.session import make_engine, make_session_factory

    if not USER_NAME.match(user):
        err.print(
            "error: --user: 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit",
            markup=False,
            highlight=False,
        )
        raise typer.Exit(2)
    engine = make_engine(_settings().resolved_database_url())
    try:
        check_schema(engine)
    except SchemaBehindError as exc:
        err.print(f"error: {exc}", markup=False, highlight=False)
        raise typer.Exit(1) from None
    with make_session_factory(engine).begin() as session:
        token = create_user_token(session, user, admin=admin)
    typer.echo(token)


def _start_dispatcher(settings: Settings, api_url: str) -> tuple[threading.Event, threading.Thread]:
    """Join (or start) Ray and run a dispatcher in a background thread."""
    from server.db.session import make_engine, make_session_factory
    from server.dispatch import Dispatcher
    from workers.ray_cluster import RayUnavailableError, connect

    try:
        address = connect(
            settings.ray_address, settings.ray_state_dir(), num_cpus=settings.ray_num_cpus
        )
    except RayUnavailableError as exc:
        err.print(f"error: {exc}", markup=False, highlight=False)
        err.print("(SILO_DISPATCHER=false serves the API without running jobs)", markup=False)
        raise typer.Exit(1) from None
    err.print(f"dispatching jobs to Ray at {address}; workers report to {api_url}", markup=False)
    engine = make_engine(settings.resolved_database_url())
    dispatcher = Dispatcher(settings, make_session_factory(engine), api_url)
    stop = threading.Event()
    thread = threading.Thread(target=dispatcher.run, args=(stop,), name="silo-dispatcher")
    thread.daemon = True
    thread.start()
    return stop, thread


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on")] = 8000,
    access_log: Annotated[bool, typer.Option(help="Log one line per request")] = True,
    http: Annotated[
        HttpImplementation,
        typer.Option(help="uvicorn's HTTP implementation (auto: httptools when installed)"),
    ] = "auto",
) -> None:
    """Run the API server, and a dispatcher that runs the jobs on Ray (SILO_DISPATCHER)."""
    import uvicorn

    from server.app import create_app, prepare_database
    from server.db.migrate import SchemaBehindError
    from server.serving import uvicorn_config

    settings = _settings()
    try:
        prepare_database(settings)
    except SchemaBehindError as exc:
        err.print(f"error: {exc}", markup=False, highlight=False)
        raise typer.Exit(1) from None
    config = uvicorn_config(
        create_app(settings), settings, host=host, port=port, http=http, access_log=access_log
    )
    running = None
    if settings.dispatcher:
        reachable = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        running = _start_dispatcher(settings, settings.api_url or f"http://{reachable}:{port}")
    server = uvicorn.Server(config)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        if running is not None:
            running[0].set()
            running[1].join(timeout=10)
    if not server.started:
        raise typer.Exit(3)  # as uvicorn.run: the server did not start (port taken, ...)


@app.command()
def dispatcher() -> None:
    """Run a dispatcher alone (beside API replicas): claim queued jobs, run them on Ray."""
    from server.db.migrate import SchemaBehindError, check_schema
    from server.db.session import make_engine

    settings = _settings()
    if not settings.api_url:
        err.print(
            "error: SILO_API_URL: set it to the API's address (workers report there), "
            "e.g. http://api:8000",
            markup=False,
        )
        raise typer.Exit(2)
    try:
        check_schema(make_engine(settings.resolved_database_url()))
    except SchemaBehindError as exc:
        err.print(f"error: {exc}", markup=False, highlight=False)
        raise typer.Exit(1) from None
    stop, thread = _start_dispatcher(settings, settings.api_url)
    try:
        while thread.is_alive():
            thread.join(timeout=1)
    except KeyboardInterrupt:
        stop.set()
        thread.join(timeout=10)


@app.command()
def demo(
    port: Annotated[int, typer.Option(help="Port of the embedded server")] = 8000,
) -> None:
    """Run the service on the embedded default and a small study through it:
    SILO against lr_rewind on digits, with live bars, the comparison table and
    the dashboard's address. The server keeps running; `silo stop` ends it."""
    from server.demo import DemoError, run_demo
    from silo_client.errors import SiloError

    out = Console(soft_wrap=True)
    try:
        succeeded = run_demo(_settings(), port, out)
    except (DemoError, SiloError) as exc:
        err.print(f"error: {exc}", markup=False, highlight=False)
        raise typer.Exit(1) from None
    if not succeeded:
        err.print("error: not every job of the study succeeded (see `silo list`)", markup=False)
        raise typer.Exit(1)


@app.command()
def stop() -> None:
    """Stop the background server `silo demo` started, and this machine's local Ray head."""
    from server.background import stop as stop_server
    from workers.ray_cluster import stop_local_head

    settings = _settings()
    pid = stop_server(settings)
    stop_local_head(settings.ray_state_dir())
    err.print(
        f"stopped the server (pid {pid}) and the local Ray head"
        if pid
        else "no background server was running; stopped the local Ray head if there was one",
        markup=False,
    )


def main() -> None:
    app()
