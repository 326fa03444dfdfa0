"""The ``silo`` commands that talk to the service: submit, list, status, watch, cancel,
retry, logs, download, upload, study, catalog, cluster.

Every command takes ``--server``, ``--token`` (see silo_client/config.py for the
defaults) and ``--json`` (the API's JSON instead of tables). A failure is one
``error:`` line on stderr, never a traceback: exit 2 for bad input (a spec file
that is missing or not YAML, a spec the server refuses with 422), exit 1 for
any other answer of the server or a network failure.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import islice
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
import yaml
from pydantic import BaseModel
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from silo_client.client import SiloClient
from silo_client.cluster_tables import cluster_sections
from silo_client.config import ConfigError, config_file, resolve
from silo_client.errors import SiloApiError, SiloError
from silo_client.render import (
    catalog_table,
    comparison_table,
    counts,
    job_detail,
    job_table,
    study_table,
)
from silo_client.watch import wait_study, watch_job
from silo_contract.jobs import JobOut
from silo_core.tables import cycle_table, sizes_table

USAGE, FAILURE, INTERRUPTED = 2, 1, 130

out = Console()
err = Console(stderr=True, soft_wrap=True)

Server = Annotated[
    str | None,
    typer.Option(
        "--server", help="API address [default: SILO_SERVER, config file, http://127.0.0.1:8000]"
    ),
]
Token = Annotated[
    str | None,
    typer.Option(
        "--token", help="API token [default: SILO_TOKEN, config file, the local admin-token]"
    ),
]
Json = Annotated[bool, typer.Option("--json", help="Print the API's JSON instead of tables")]
JobId = Annotated[int, typer.Argument(help="Job id", min=1)]
SpecFile = Annotated[Path, typer.Argument(help="Job spec, YAML or JSON")]
Tags = Annotated[list[str] | None, typer.Option("--tag", help="A tag; repeat for more")]
Priority = Annotated[int, typer.Option(help="Higher runs first (-100..100)")]
Name = Annotated[str | None, typer.Option(help="A name to recognise the job by")]
Cpus = Annotated[float | None, typer.Option(help="CPU cores per attempt")]
Gpus = Annotated[float | None, typer.Option(help="GPUs per attempt (0.25 shares a card)")]
Wait = Annotated[bool, typer.Option("--wait", help="Watch until it ends")]
Poll = Annotated[float, typer.Option(help="Seconds between polls", min=0.05)]


def _fail(message: str, code: int) -> NoReturn:
    err.print(f"error: {' '.join(message.split())}", markup=False, highlight=False)
    raise typer.Exit(code)


@contextmanager
def _connect(server: str | None, token: str | None) -> Iterator[SiloClient]:
    """A client for the command; every failure on the way becomes one ``error:`` line."""
    try:
        config = resolve(server=server, token=token)
    except ConfigError as exc:
        _fail(str(exc), USAGE)
    if config.token is None:
        _fail(
            f'no API token: pass --token, set SILO_TOKEN or put token = "..." in {config_file()}',
            USAGE,
        )
    try:
        with SiloClient(config.server, config.token) as client:
            yield client
    except SiloApiError as exc:
        hint = f" (token from {config.token_source})" if exc.status == 401 else ""
        _fail(f"{exc}{hint}", USAGE if exc.status == 422 else FAILURE)
    except SiloError as exc:
        _fail(str(exc), FAILURE)
    except KeyboardInterrupt:
        raise typer.Exit(INTERRUPTED) from None


def _print_json(value: BaseModel | list[Any]) -> None:
    if isinstance(value, BaseModel):
        typer.echo(value.model_dump_json(indent=2))
        return
    items = [v.model_dump(mode="json") if isinstance(v, BaseModel) else v for v in value]
    typer.echo(json.dumps(items, indent=2))


def _print_job(job: JobOut, as_json: bool) -> None:
    """A job just changed (submitted, cancelled, retried): its JSON, or ``job N status``."""
    if as_json:
        _print_json(job)
    else:
        out.print(f"job {job.id} {job.status}", highlight=False)


def _read_spec(path: Path) -> dict[str, Any]:
    """A spec file as a mapping; the server checks its fields. Exit 2 naming the problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        _fail(f"{path}: no such file", USAGE)
    except (OSError, UnicodeDecodeError) as exc:
        _fail(f"{path}: cannot read: {exc}", USAGE)
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        _fail(f"{path}: invalid JSON: {exc}", USAGE)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        _fail(f"{path}: invalid YAML{where}: {problem}", USAGE)
    if not isinstance(data, dict):
        _fail(f"{path}: a spec is a mapping of fields, not {type(data).__name__}", USAGE)
    return data


def _resources(cpus: float | None, gpus: float | None) -> dict[str, float] | None:
    chosen = {k: v for k, v in (("cpus", cpus), ("gpus", gpus)) if v is not None}
    return chosen or None


def _end_of_watch(client: SiloClient, job: JobOut, as_json: bool) -> None:
    """Print the finished job (JSON) or its cycle table; exit 1 unless it succeeded."""
    if as_json:
        _print_json(job)
    else:
        out.print(cycle_table(client.cycles(job.id), f"job {job.id}: {job.status}"))
        if job.error_message:
            err.print(f"error: {job.error_message}", markup=False, highlight=False)
    if job.status != "succeeded":
        raise typer.Exit(FAILURE)


def _watch(client: SiloClient, job_id: int, as_json: bool, poll: float) -> None:
    job = client.wait(job_id, poll=poll) if as_json else watch_job(client, job_id, err, poll)
    _end_of_watch(client, job, as_json)


# --- jobs -------------------------------------------------------------------------


def submit(
    spec_file: SpecFile,
    wait: Wait = False,
    priority: Priority = 0,
    name: Name = None,
    tag: Tags = None,
    cpus: Cpus = None,
    gpus: Gpus = None,
    poll: Poll = 1.0,
    server: Server = None,
    token: Token = None,
    as_json: Json = False,
) -> None:
    """Queue a job from a spec file (YAML or JSON)."""
    spec = _read_spec(spec_file)
    with _connect(server, token) as client:
        job = client.submit(
            spec, priority=priority, name=name, tags=tag or [], resources=_resources(cpus, gpus)
        )
        if not wait:
            _print_job(job, as_json)
            return
        if not as_json:
            err.print(f"job {job.id} {job.status}; watching (Ctrl-C stops watching, not the job)")
        _watch(client, job.id, as_json, poll)


def list_jobs(
    status: Annotated[
        list[str] | None, typer.Option("--status", help="Only this status; repeat for more")
    ] = None,
    owner: Annotated[str | None, typer.Option(help="Only this owner's jobs")] = None,
    tag: Annotated[str | None, typer.Option(help="Only jobs with this tag")] = None,
    limit: Annotated[int, typer.Option(help="At most this many jobs", min=1)] = 50,
    server: Server = None,
    token: Token = None,
    as_json: Json = False,
) -> None:
    """List jobs, newest first."""
    with _connect(server, token) as client:
        pages = client.jobs(status=status, owner=owner, tag=tag, page_size=min(limit, 200))
        jobs = list(islice(pages, limit))
    if as_json:
        _print_json(jobs)
    else:
        out.print(job_table(jobs, out.width))


def status(
    job_id: JobId, server: Server = None, token: Token = None, as_json: Json = False
) -> None:
    """A job's status, progress and place in the queue."""
    with _connect(server, token) as client:
        job = client.get(job_id)
    if as_json:
        _print_json(job)
    else:
        out.print(job_detail(job))


def watch(
    job_id: JobId,
    poll: Poll = 1.0,
    server: Server = None,
    token: Token = None,
    as_json: Json = False,
) -> None:
    """Follow a job live until it ends; print its cycle table. Exit 1 unless it succeeded."""
    with _connect(server, token) as client:
        _watch(client, job_id, as_json, poll)


def _change(verb: str, job_id: int, server: str | None, token: str | None, as_json: bool) -> None:
    with _connect(server, token) as client:
        job = client.cancel(job_id) if verb == "cancel" else client.retry(job_id)
    _print_job(job, as_json)


def cancel(
    job_id: JobId, server: Server = None, token: Token = None, as_json: Json = False
) -> None:
    """Cancel a queued job, or stop a running one at its next epoch."""
    _change("cancel", job_id, server, token, as_json)


def retry(job_id: JobId, server: Server = None, token: Token = None, as_json: Json = False) -> None:
    """Queue a failed or cancelled job again (it resumes from its checkpoint)."""
    _change("retry", job_id, server, token, as_json)


def logs(
    job_id: JobId,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Go on until the job ends")
    ] = False,
    attempt: Annotated[int | None, typer.Option(help="One attempt only", min=1)] = None,
    server: Server = None,
    token: Token = None,
    as_json: Json = False,
) -> None:
    """The workers' log of a job, attempt by attempt."""
    with _connect(server, token) as client:
        for line in client.logs(job_id, attempt=attempt, follow=follow):
            typer.echo(json.dumps(line) if as_json else line)


def download(
    job_id: JobId,
    dest: Annotated[
        Path | None, typer.Argument(help="Folder to write to [default: ./silo-job-ID]")
    ] = None,
    server: Server = None,
    token: Token = None,
    as_json: Json = False,
) -> None:
    """Download a job's artifacts, each checked against its SHA-256, and show their
    sizes; `silo_core.export.load_pruned(DEST)` rebuilds the pruned network."""
    with _connect(server, token) as client:
        paths = client.download(job_id, dest or Path(f"silo-job-{job_id}"))
    if as_json:
        _print_json([str(p) for p in paths])
        return
    for path in paths:
        out.print(f"{path}  ({path.stat().st_size} bytes)", highlight=False)
    sizes = next((p for p in paths if p.name == "sizes.json"), None)
    if sizes is not None:  # jobs of older versions have none
        out.print(sizes_table(json.loads(sizes.read_text())))


def upload(
    file: Annotated[Path, typer.Argument(help="The file, e.g. starting weights", exists=True)],
    server: Server = None,
    token: Token = None,
    as_json: Json = False,
) -> None:
    """Upload a file; prints its id. A spec starts from it with model.weights: file:<id>."""
    size = file.stat().st_size
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
    )
    # A bar on a terminal only: --json and pipes get the answer alone.
    with (
        _connect(server, token) as client,
        Progress(*columns, console=err, transient=True, disable=as_json) as progress,
    ):
        task = progress.add_task(file.name, total=size)
        info = client.upload(file, on_progress=lambda sent: progress.update(task, completed=sent))
    if as_json:
        _print_json(info)
        return
    out.print(
        f"{info.id}  {info.reference}  {info.name}  {info.size} bytes  sha256 {info.sha256}",
        highlight=False,
    )


# --- studies ----------------------------------------------------------------------

study_app = typer.Typer(
    help="Studies: one spec under several schedules and seeds.", no_args_is_help=True
)


@study_app.command("submit")
def study_submit(
    spec_file: Annotated[Path, typer.Argument(help="Base job spec, YAML or JSON")],
    schedule: Annotated[
        list[str] | None,
        typer.Option("--schedule", help="A schedule name; repeat [default: the server's six]"),
    ] = None,
    seed: Annotated[
        list[int] | None, typer.Option("--seed", help="A seed; repeat [default: 0 1 2]")
    ] = None,
    wait: Wait = False,
    priority: Priority = 0,
    name: Name = None,
    tag: Tags = None,
    cpus: Cpus = None,
    gpus: Gpus = None,
    poll: Poll = 2.0,
    server: Server = None,
    token: Token = None,
    as_json: Json = False,
) -> None:
    """Queue one job per schedule and seed; show the comparison table with --wait."""
    spec = _read_spec(spec_file)
    schedules = [{"name": s} for s in schedule] if schedule else None
    with _connect(server, token) as client:
        study = client.submit_study(
            spec,
            schedules,
            seed or None,
            name=name,
            priority=priority,
            tags=tag or [],
            resources=_resources(cpus, gpus),
        )
        if wait:
            study = wait_study(client, study.id, err, poll)
    if as_json:
        _print_json(study)
    elif wait:
        out.print(comparison_table(study))
    else:
        out.print(f"study {study.id}: {counts(study.status)}", highlight=False)


@study_app.command("show")
def study_show(
    study_id: Annotated[int, typer.Argument(help="Study id", min=1)],
    server: Server = None,
    token: Token = None,
    as_json: Json = False,
) -> None:
    """A study's members and its comparison table (mean ± std over seeds, n seeds)."""
    with _connect(server, token) as client:
        study = client.study(study_id)
    if as_json:
        _print_json(study)
        return
    out.print(f"study {study.id}: {counts(study.status)}", highlight=False)
    out.print(comparison_table(study))


@study_app.command("list")
def study_list(server: Server = None, token: Token = None, as_json: Json = False) -> None:
    """List studies, newest first."""
    with _connect(server, token) as client:
        studies = list(client.studies())
    if as_json:
        _print_json(studies)
    else:
        out.print(study_table(studies))


def catalog(server: Server = None, token: Token = None, as_json: Json = False) -> None:
    """What the service can run: models, data sets, pruning methods, schedules and
    presets, built in or from which plug-in package."""
    with _connect(server, token) as client:
        found = client.catalog()
    if as_json:
        _print_json(found)
    else:
        out.print(catalog_table(found))


def cluster(server: Server = None, token: Token = None, as_json: Json = False) -> None:
    """Why jobs wait and when they may start: the cluster's size and use, each
    owner's use against fair share and the GPU quota, the queue by reason, and the
    head of the queue with estimated starts."""
    with _connect(server, token) as client:
        view = client.cluster()
    if as_json:
        _print_json(view)
        return
    for section in cluster_sections(view):
        out.print(section)
        out.print()


def register_client_commands(app: typer.Typer) -> None:
    """Add the service client's commands to the ``silo`` app."""
    for command, name in (
        (submit, "submit"),
        (list_jobs, "list"),
        (status, "status"),
        (watch, "watch"),
        (cancel, "cancel"),
        (retry, "retry"),
        (logs, "logs"),
        (download, "download"),
        (catalog, "catalog"),
        (cluster, "cluster"),
        (upload, "upload"),
    ):
        app.command(name)(command)
    app.add_typer(study_app, name="study")
