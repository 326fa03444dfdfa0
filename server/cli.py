"""The service's ``silo`` commands: serve, dispatcher, db, token, user, audit, demo, stop.

silo_client.entry adds them to the ``silo`` command when the server part is
installed."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Annotated, Any, Literal, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from server.settings import Settings, get_settings, settings_problems

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

app = typer.Typer()  # the commands register_server_commands adds to ``silo``
err = Console(stderr=True, soft_wrap=True)
db_app = typer.Typer(help="The service's database.", no_args_is_help=True)
token_app = typer.Typer(
    help="API tokens, on SILO_DATABASE_URL directly (the server's administration).",
    no_args_is_help=True,
)
user_app = typer.Typer(
    help="Users, on SILO_DATABASE_URL directly (the server's administration).",
    no_args_is_help=True,
)
app.add_typer(db_app, name="db")
app.add_typer(token_app, name="token")
app.add_typer(user_app, name="user")

# server.serving.HTTP_IMPLEMENTATIONS, named here so `silo --help` need not import uvicorn
HttpImplementation = Literal["auto", "httptools", "h11"]


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


@contextmanager
def _admin_session() -> Iterator[Session]:
    """One transaction on SILO_DATABASE_URL for an administration command, committed
    when the block ends; each failure is one ``error:`` line (2: bad input, else 1)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    from server.auth.admin import AdminError, InvalidRequestError
    from server.db.migrate import SchemaBehindError, check_schema
    from server.db.session import make_engine, make_session_factory

    url = _settings().resolved_database_url()
    engine = make_engine(url)
    try:
        check_schema(engine)
        with make_session_factory(engine).begin() as session:
            yield session
    except SchemaBehindError as exc:
        _fail(str(exc), 1)
    except InvalidRequestError as exc:
        _fail(str(exc), 2)
    except AdminError as exc:
        _fail(str(exc), 1)
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        _fail(f"database {make_url(url).render_as_string(hide_password=True)}: {reason}", 1)
    finally:
        engine.dispose()


def _fail(message: str, code: int) -> NoReturn:
    err.print(f"error: {message}", markup=False, highlight=False)
    raise typer.Exit(code)


def _print(table: Table) -> None:
    """A table whole, however narrow the terminal (ids and prefixes are never cut)."""
    natural = Console(width=10_000).measure(table).maximum
    Console(width=max(Console().width, natural)).print(table, markup=False, highlight=False)


def _print_json(items: list[Any]) -> None:
    typer.echo(json.dumps([item.model_dump(mode="json") for item in items], indent=2))


UserName = Annotated[str, typer.Argument(help="User name")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table")]


@token_app.command("create")
def token_create(
    user: Annotated[str, typer.Option(help="User name; created if new")],
    admin: Annotated[bool, typer.Option(help="Give the user admin rights")] = False,
    expires: Annotated[
        str | None, typer.Option(help="Lifetime: 30m, 12h, 90d, 8w (default: no expiry)")
    ] = None,
) -> None:
    """Create an API token and print it once (only its hash is stored)."""
    from server.auth.admin import USER_NAME, create_token, local_actor, parse_duration

    if not USER_NAME.match(user):
        _fail("--user: 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit", 2)
    try:
        lifetime = parse_duration(expires) if expires is not None else None
    except ValueError as exc:
        _fail(f"--expires: {exc}", 2)
    with _admin_session() as session:
        created = create_token(session, user, actor=local_actor(), admin=admin, expires_in=lifetime)
    typer.echo(created.token)


@token_app.command("list")
def token_list(
    user: Annotated[str | None, typer.Option(help="Only this user's tokens")] = None,
    include_all: Annotated[
        bool, typer.Option("--all", help="Revoked and expired tokens too")
    ] = False,
    as_json: AsJson = False,
) -> None:
    """API tokens (never the tokens themselves): id, user, prefix, created, expires, state."""
    from server.auth.admin import list_tokens
    from silo_client.render import token_table

    with _admin_session() as session:
        tokens = list_tokens(session, user=user, include_inactive=include_all)
    if as_json:
        _print_json(tokens)
    else:
        _print(token_table(tokens))


@token_app.command("revoke")
def token_revoke(
    token: Annotated[str, typer.Argument(help="The token's id, its prefix, or the token")],
) -> None:
    """Revoke a token: every API process refuses it within SILO_TOKEN_CACHE_SECONDS."""
    from server.auth.admin import local_actor, revoke_token

    ref: int | str = int(token) if token.isdigit() else token
    with _admin_session() as session:
        revoked, changed = revoke_token(session, ref, actor=local_actor())
    what = f"token {revoked.id} ({revoked.prefix}) of {revoked.user}"
    typer.echo(f"revoked {what}" if changed else f"{what} was already revoked")


@user_app.command("list")
def user_list(as_json: AsJson = False) -> None:
    """Users: admin, active, how many tokens still work."""
    from server.auth.admin import list_users
    from silo_client.render import user_table

    with _admin_session() as session:
        users = list_users(session)
    if as_json:
        _print_json(users)
    else:
        _print(user_table(users))


def _set_user(name: str, flag: str, value: bool, done: str) -> None:
    from server.auth.admin import local_actor, set_active, set_admin

    change = set_active if flag == "active" else set_admin
    with _admin_session() as session:
        _, changed = change(session, name, value, actor=local_actor())
    typer.echo(f"{name} {done}" if changed else f"{name} was already {done}")


@user_app.command("deactivate")
def user_deactivate(name: UserName) -> None:
    """Refuse every token of the user (their jobs stay); not the last active admin."""
    _set_user(name, "active", False, "deactivated")


@user_app.command("activate")
def user_activate(name: UserName) -> None:
    """Accept the user's tokens again (those neither revoked nor expired)."""
    _set_user(name, "active", True, "activated")


@user_app.command("promote")
def user_promote(name: UserName) -> None:
    """Give the user admin rights."""
    _set_user(name, "admin", True, "promoted")


@user_app.command("demote")
def user_demote(name: UserName) -> None:
    """Take the user's admin rights; not the last active admin's."""
    _set_user(name, "admin", False, "demoted")


@app.command()
def audit(
    limit: Annotated[int, typer.Option(help="How many events", min=1, max=10_000)] = 50,
    as_json: AsJson = False,
) -> None:
    """Administrative changes, newest first: who created or revoked which token,
    (de)activated, promoted or demoted whom, when."""
    from server.auth.admin import audit_page
    from silo_client.render import audit_table
    from silo_contract.accounts import AuditEventOut

    with _admin_session() as session:
        events: list[AuditEventOut] = []
        before: int | None = None
        while len(events) < limit:
            page, before = audit_page(session, limit=min(200, limit - len(events)), before=before)
            events += page
            if before is None:
                break
    if as_json:
        _print_json(events)
    else:
        _print(audit_table(events))


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


MAX_WORKERS = 64


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on")] = 8000,
    access_log: Annotated[bool, typer.Option(help="Log one line per request")] = True,
    http: Annotated[
        HttpImplementation,
        typer.Option(help="uvicorn's HTTP implementation (auto: httptools when installed)"),
    ] = "auto",
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            max=MAX_WORKERS,
            help="API processes sharing the port (PostgreSQL only past 1); "
            "the dispatcher runs once, beside them",
        ),
    ] = 1,
) -> None:
    """Run the API server, and a dispatcher that runs the jobs on Ray (SILO_DISPATCHER)."""
    from server.db.session import is_sqlite

    settings = _settings()
    if workers > 1 and is_sqlite(settings.resolved_database_url()):
        err.print(
            f"error: --workers {workers}: SQLite serves from one process; "
            "several API processes need PostgreSQL (SILO_DATABASE_URL)",
            markup=False,
        )
        raise typer.Exit(2)

    from server.app import prepare_database
    from server.db.migrate import SchemaBehindError

    try:
        prepare_database(settings)
    except SchemaBehindError as exc:
        err.print(f"error: {exc}", markup=False, highlight=False)
        raise typer.Exit(1) from None
    if workers == 1:
        started = _serve_one(settings, host, port, http, access_log)
    else:
        started = _serve_several(settings, host, port, http, access_log, workers)
    if not started:
        raise typer.Exit(3)  # as uvicorn.run: the server did not start (port taken, ...)


@contextmanager
def _dispatcher_beside(settings: Settings, host: str, port: int) -> Iterator[None]:
    """While the block runs, the dispatcher `silo serve` runs beside the API
    (SILO_DISPATCHER); it is stopped after."""
    if not settings.dispatcher:
        yield
        return
    reachable = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    stop, thread = _start_dispatcher(settings, settings.api_url or f"http://{reachable}:{port}")
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=10)


def _serve_one(settings: Settings, host: str, port: int, http: str, access_log: bool) -> bool:
    """The API in this process; whether it started."""
    import uvicorn

    from server.app import create_app
    from server.serving import uvicorn_config

    config = uvicorn_config(
        create_app(settings), settings, host=host, port=port, http=http, access_log=access_log
    )
    server = uvicorn.Server(config)
    with _dispatcher_beside(settings, host, port), suppress(KeyboardInterrupt):
        server.run()
    return server.started


def _serve_several(
    settings: Settings, host: str, port: int, http: str, access_log: bool, workers: int
) -> bool:
    """The API in ``workers`` processes on one socket, under uvicorn's supervisor in
    this process, which runs the dispatcher too (once); whether they started."""
    from uvicorn.config import STARTUP_FAILURE
    from uvicorn.supervisors import Multiprocess

    from server.serving import WorkerConfig

    config = WorkerConfig(
        settings, host=host, port=port, workers=workers, http=http, access_log=access_log
    )
    try:
        sock = config.bind_socket()
    except SystemExit:  # uvicorn logged why (the port is taken, ...)
        return False
    with sock, _dispatcher_beside(settings, host, port):
        supervisor = Multiprocess(config, sockets=[sock])
        supervisor.run()
    return not any(worker.exitcode == STARTUP_FAILURE for worker in supervisor.processes)


@app.command()
def dispatcher() -> None:
    """Run a dispatcher alone (beside API replicas): claim queued jobs, run them on Ray."""
    from server.db.migrate import SchemaBehindError, check_schema
    from server.db.session import is_sqlite, make_engine

    settings = _settings()
    if is_sqlite(settings.resolved_database_url()):
        # The API learns of another process's commits through PostgreSQL's NOTIFY only:
        # on SQLite its answers would go stale (server/changes/).
        err.print(
            "error: SILO_DATABASE_URL: a dispatcher of its own needs PostgreSQL; "
            "on SQLite, `silo serve` runs the dispatcher",
            markup=False,
        )
        raise typer.Exit(2)
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


def register_server_commands(silo: typer.Typer) -> None:
    """Add this module's commands and groups to the ``silo`` command."""
    silo.registered_commands.extend(app.registered_commands)
    silo.registered_groups.extend(app.registered_groups)
