"""Ceilings for bench/api_load.py: minimal FastAPI apps under the same uvicorn as `silo serve`.

* ``one-row``: GET /items/{id} reads a few columns of one ``jobs`` row by primary
  key (a session per request from a pool of the service's size, autocommit as the
  service's reads) and answers them as a pydantic model; POST /items validates a
  body of the service's JobSubmit shape and inserts it into ``ceiling_items``,
  answering 201 with the new row's id;
* ``memory``: the same GET route answering a fixed dict: the HTTP stack alone.

Both run as ``python bench/ceiling.py serve --kind one-row|memory --url URL --port N``:
one process, uvicorn's Config built by server.serving.uvicorn_config as `silo serve`
builds it (httptools when installed, log level info), without an access log.
What the service does beyond these (authentication, the job's detail and queue
position, the spec's validation, tags, events) is what its ratio to them measures.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel
from sqlalchemy import JSON, Column, MetaData, Table, insert, select

from server.db.models import BigId, Job
from silo_contract.jobs import JobSubmit  # at the top: FastAPI resolves the annotation here

KINDS = ("one-row", "memory")
METADATA = MetaData()
ITEMS = Table(
    "ceiling_items",
    METADATA,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("body", JSON, nullable=False),
)


class Item(BaseModel):
    id: int
    status: str
    priority: int
    created_at: datetime
    progress_epoch: int | None
    best_accuracy: float | None


class Created(BaseModel):
    id: int


FIXED = {
    "id": 1,
    "status": "running",
    "priority": 0,
    "created_at": "2026-01-01T00:00:00Z",
    "progress_epoch": 4,
    "best_accuracy": 0.95,
}


def _app() -> FastAPI:
    """An app with the /readyz route the benchmark waits on."""
    app = FastAPI()

    @app.get("/readyz")
    def ready() -> dict[str, bool]:
        return {"ready": True}

    return app


def one_row_app(url: str, pool_size: int) -> FastAPI:
    """GET one ``jobs`` row by id, POST one ``ceiling_items`` row."""
    from server.db.session import make_engine, make_session_factory

    engine = make_engine(url, pool_size=pool_size)
    METADATA.create_all(engine)
    reads = make_session_factory(engine, read_only=True)
    writes = make_session_factory(engine)
    app = _app()

    @app.get("/items/{item_id}", response_model=Item)
    def get_item(item_id: int) -> Any:
        with reads() as session:
            row = session.execute(
                select(
                    Job.id,
                    Job.status,
                    Job.priority,
                    Job.created_at,
                    Job.progress_epoch,
                    Job.best_accuracy,
                ).where(Job.id == item_id)
            ).one_or_none()
        if row is None:
            raise HTTPException(404, "no such item")
        return Item.model_validate(row._asdict())

    @app.post("/items", status_code=201, response_model=Created)
    def create_item(body: JobSubmit) -> Any:
        with writes.begin() as session:
            item_id = session.execute(
                insert(ITEMS).values(body=body.model_dump(mode="json")).returning(ITEMS.c.id)
            ).scalar_one()
        return Created(id=item_id)

    return app


def memory_app() -> FastAPI:
    """GET answering a fixed dict: no database."""
    app = _app()

    @app.get("/items/{item_id}", response_model=Item)
    def get_item(item_id: int) -> Any:
        return {**FIXED, "id": item_id}

    return app


@contextmanager
def ceiling_server(
    kind: str, url: str, folder: Path, *, ready_seconds: float = 60
) -> Iterator[str]:
    """Run the ``kind`` app on ``url``'s database in a subprocess; yield its base URL."""
    from serve import free_port, wait_until_ready

    port = free_port()
    log_path = folder / f"ceiling-{kind}.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "serve",
                *("--kind", kind, "--url", url, "--port", str(port)),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            wait_until_ready(process, base, log_path, ready_seconds, f"ceiling {kind}")
            yield base
        finally:
            process.terminate()
            process.wait(timeout=60)


def serve(kind: str, url: str, host: str, port: int) -> None:
    """Serve the ``kind`` app with `silo serve`'s uvicorn options, no access log."""
    import uvicorn

    from server.serving import uvicorn_config
    from server.settings import Settings

    settings = Settings()
    app = one_row_app(url, settings.database_pool_size) if kind == "one-row" else memory_app()
    config = uvicorn_config(app, settings, host=host, port=port, access_log=False)
    uvicorn.Server(config).run()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    serving = commands.add_parser("serve", help="serve one ceiling app")
    serving.add_argument("--kind", choices=KINDS, required=True)
    serving.add_argument("--url", default="sqlite://", help="the database (one-row)")
    serving.add_argument("--host", default="127.0.0.1")
    serving.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()
    serve(args.kind, args.url, args.host, args.port)


if __name__ == "__main__":
    main()
