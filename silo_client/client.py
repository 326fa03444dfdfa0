"""``SiloClient``: the service's API from Python (notebooks, scripts, the ``silo`` CLI).

Only httpx, pydantic and silo_contract: a notebook installs the client without
the server, the workers or PyTorch.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import BaseModel

from silo_client.errors import (
    ChecksumMismatchError,
    SiloConnectionError,
    SiloError,
)
from silo_client.transport import ApiTransport
from silo_contract.accounts import (
    AuditEventOut,
    AuditPage,
    MeOut,
    TokenCreated,
    TokenList,
    TokenOut,
    UserList,
    UserOut,
)
from silo_contract.catalog import CatalogOut
from silo_contract.cluster import ClusterOut
from silo_contract.files import FileOut, FilePage
from silo_contract.jobs import ArtifactList, ArtifactOut, JobOut, JobPage, JobSummary, Resources
from silo_contract.reports import CycleList, CycleOut, EventOut, EventPage
from silo_contract.status import is_terminal
from silo_contract.studies import StudyOut, StudyPage, StudySummary

DOWNLOAD_CHUNK = 1 << 20
UPLOAD_CHUNK = 1 << 20
WATCH_SECONDS = 30.0  # how long follow/wait's watches wait for a change
WATCH_TIMEOUT_MARGIN = 30.0


def sleep_rest_of(poll: float, began: float) -> None:
    """Sleep until ``poll`` seconds have passed since ``began`` (time.monotonic()):
    a watch that answers at once, as an older server's does, still reads at most
    once a poll."""
    time.sleep(max(0.0, poll - (time.monotonic() - began)))


def _watch(wait: float | None) -> dict[str, Any]:
    """The request options of a watch of ``wait`` seconds (none for None): the
    read timeout outlasts the wait."""
    if wait is None:
        return {}
    return {
        "params": {"wait": f"{wait:g}s"},
        "timeout": httpx.Timeout(wait + WATCH_TIMEOUT_MARGIN, connect=10.0),
    }


def _as_dict(value: BaseModel | Mapping[str, Any]) -> dict[str, Any]:
    """A spec or resources given as a pydantic model (a JobSpec) or a plain mapping."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", exclude_none=True)
    return dict(value)


def _submission(
    spec: BaseModel | Mapping[str, Any],
    priority: int,
    name: str | None,
    tags: Iterable[str],
    resources: Resources | Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The fields a job and a study are submitted with; unset ones are left to the server."""
    body: dict[str, Any] = {"spec": _as_dict(spec), "priority": priority, "tags": list(tags)}
    if name is not None:
        body["name"] = name
    if resources is not None:
        body["resources"] = _as_dict(resources)
    return body


class SiloClient(ApiTransport):
    """The service's API from Python: jobs, their events, cycles and artifacts,
    uploaded files, studies, and administration (see ``ApiTransport`` for
    retries and errors)."""

    # --- jobs ---------------------------------------------------------------------

    def submit(
        self,
        spec: BaseModel | Mapping[str, Any],
        *,
        priority: int = 0,
        name: str | None = None,
        tags: Iterable[str] = (),
        resources: Resources | Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> JobOut:
        """Queue a job. A fresh Idempotency-Key per call makes a retried submit safe."""
        body = _submission(spec, priority, name, tags, resources)
        key = idempotency_key or uuid.uuid4().hex
        return self._call(JobOut, "POST", "/v1/jobs", json=body, headers={"Idempotency-Key": key})

    def get(self, job_id: int, *, wait: float | None = None) -> JobOut:
        """The job. With ``wait`` (seconds, at most 300) and an answer held from an
        earlier ``get``, a watch: returns as soon as the job changes, or the same
        job after ``wait`` seconds."""
        return self._call(JobOut, "GET", f"/v1/jobs/{int(job_id)}", **_watch(wait))

    def jobs(
        self,
        *,
        status: str | Iterable[str] | None = None,
        owner: str | None = None,
        tag: str | None = None,
        page_size: int = 50,
    ) -> Iterator[JobSummary]:
        """Jobs newest first, across all pages (lazily: stop iterating to stop asking)."""
        statuses = [status] if isinstance(status, str) else list(status or [])
        params = {"status": statuses or None, "owner": owner, "tag": tag, "limit": page_size}
        return self._pages("/v1/jobs", JobPage, params)

    def cycles(self, job_id: int) -> list[CycleOut]:
        return self._call(CycleList, "GET", f"/v1/jobs/{int(job_id)}/cycles").items

    def events(self, job_id: int, after: int = 0, *, page_size: int = 500) -> Iterator[EventOut]:
        """The job's epoch events with ``seq > after`` so far, oldest first."""
        while True:
            page = self._call(
                EventPage,
                "GET",
                f"/v1/jobs/{int(job_id)}/events",
                params={"after": after, "limit": page_size},
            )
            yield from page.items
            if not page.items or page.next_after == after:
                return
            after = page.next_after

    def follow(
        self, job_id: int, *, poll: float = 1.0, after: int = 0
    ) -> Iterator[tuple[JobOut, list[EventOut]]]:
        """The job and its new events each time it changes, until it is finished.

        Each read after the first is a watch (``get(wait=...)``): it returns
        when the job changes, so progress shows as it happens while an idle
        job costs one request per WATCH_SECONDS. ``poll`` is the least time
        between two reads."""
        job = None
        while True:
            began = time.monotonic()
            # The job is read before the events: once it is final, every
            # event was already written, so the read that follows gets the last.
            job = self.get(job_id, wait=WATCH_SECONDS if job is not None else None)
            events = list(self.events(job_id, after))
            if events:
                after = events[-1].seq
            yield job, events
            if is_terminal(job.status):
                return
            sleep_rest_of(poll, began)

    def stream(self, job_id: int, *, poll: float = 1.0, after: int = 0) -> Iterator[EventOut]:
        """New events as they come, until the job is finished (succeeded, failed, cancelled)."""
        for _, events in self.follow(job_id, poll=poll, after=after):
            yield from events

    def wait(self, job_id: int, *, poll: float = 1.0) -> JobOut:
        """Block until the job is finished; the job as it ended (the job only is
        watched: the events are not read)."""
        job, began = self.get(job_id), time.monotonic()
        while not is_terminal(job.status):
            sleep_rest_of(poll, began)
            job, began = self.get(job_id, wait=WATCH_SECONDS), time.monotonic()
        return job

    def cancel(self, job_id: int) -> JobOut:
        return self._call(JobOut, "POST", f"/v1/jobs/{int(job_id)}/cancel")

    def retry(self, job_id: int) -> JobOut:
        return self._call(JobOut, "POST", f"/v1/jobs/{int(job_id)}/retry")

    def logs(
        self, job_id: int, *, attempt: int | None = None, follow: bool = False
    ) -> Iterator[str]:
        """The workers' log lines, attempt by attempt; ``follow`` goes on until the job ends."""
        # A followed log can be silent for long stretches (a slow epoch): no read timeout.
        timeout = httpx.Timeout(self._http.timeout.connect, read=None) if follow else None
        response = self._send(
            "GET",
            f"/v1/jobs/{int(job_id)}/logs",
            params={"attempt": attempt, "follow": "true" if follow else None},
            stream=True,
            timeout=timeout,
        )
        try:
            yield from response.iter_lines()
        except httpx.TransportError as exc:
            raise SiloConnectionError(f"the log stream broke off: {exc}") from None
        finally:
            response.close()

    # --- artifacts ----------------------------------------------------------------

    def artifacts(self, job_id: int) -> list[ArtifactOut]:
        return self._call(ArtifactList, "GET", f"/v1/jobs/{int(job_id)}/artifacts").items

    def download(self, job_id: int, dest_dir: str | Path) -> list[Path]:
        """Every artifact into ``dest_dir``, each checked against its registered SHA-256."""
        dest = Path(dest_dir)
        dest.mkdir(parents=True, exist_ok=True)
        return [self._download(job_id, artifact, dest) for artifact in self.artifacts(job_id)]

    def _download(self, job_id: int, artifact: ArtifactOut, dest: Path) -> Path:
        target = (dest / artifact.name).resolve()
        if not target.is_relative_to(dest.resolve()):
            raise SiloError(f"artifact {artifact.name!r}: its name leads outside {dest}")
        target.parent.mkdir(parents=True, exist_ok=True)
        # Written beside the target and renamed once verified: a failed or
        # corrupted download never leaves a file that looks complete.
        partial = target.with_name(target.name + ".part")
        digest = hashlib.sha256()
        path = f"/v1/jobs/{int(job_id)}/artifacts/{quote(artifact.name)}"
        response = self._send("GET", path, stream=True)
        try:
            with partial.open("wb") as out:
                for chunk in response.iter_bytes(DOWNLOAD_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
        except httpx.TransportError as exc:
            partial.unlink(missing_ok=True)
            raise SiloConnectionError(f"download of {artifact.name!r} broke off: {exc}") from None
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        finally:
            response.close()
        expected = artifact.checksum.lower().removeprefix("sha256:")
        if digest.hexdigest() != expected:
            partial.unlink()
            raise ChecksumMismatchError(artifact.name, expected, digest.hexdigest())
        partial.replace(target)
        return target

    # --- uploaded files -----------------------------------------------------------

    def upload(
        self,
        path: str | Path,
        *,
        name: str | None = None,
        on_progress: Callable[[int], None] | None = None,
    ) -> FileOut:
        """Upload a file (e.g. starting weights), streamed from disk a block at a
        time; a spec names it by the answer's ``reference`` in ``model.weights``.
        ``on_progress`` hears the bytes sent so far after each block."""
        source = Path(path)
        size = source.stat().st_size

        def blocks() -> Iterator[bytes]:
            sent = 0
            with source.open("rb") as handle:
                while block := handle.read(UPLOAD_CHUNK):
                    yield block
                    sent += len(block)
                    if on_progress is not None:
                        on_progress(sent)

        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        params = {"name": name or source.name}
        return self._call(
            FileOut, "POST", "/v1/files", params=params, content=blocks(), headers=headers
        )

    def files(self, *, page_size: int = 50) -> Iterator[FileOut]:
        """Your uploaded files, newest first."""
        return self._pages("/v1/files", FilePage, {"limit": page_size})

    def file(self, file_id: int) -> FileOut:
        return self._call(FileOut, "GET", f"/v1/files/{int(file_id)}")

    def delete_file(self, file_id: int) -> None:
        self._send("DELETE", f"/v1/files/{int(file_id)}").close()

    # --- studies ------------------------------------------------------------------

    def submit_study(
        self,
        spec: BaseModel | Mapping[str, Any],
        schedules: Iterable[Mapping[str, Any]] | None = None,
        seeds: Iterable[int] | None = None,
        *,
        name: str | None = None,
        priority: int = 0,
        tags: Iterable[str] = (),
        resources: Resources | Mapping[str, Any] | None = None,
    ) -> StudyOut:
        """One job per schedule and seed; None keeps the server's default schedules/seeds."""
        body = _submission(spec, priority, name, tags, resources)
        if schedules is not None:
            body["schedules"] = [dict(s) for s in schedules]
        if seeds is not None:
            body["seeds"] = list(seeds)
        return self._call(StudyOut, "POST", "/v1/studies", json=body)

    def study(self, study_id: int, *, wait: float | None = None) -> StudyOut:
        """The study; ``wait`` as in ``get``."""
        return self._call(StudyOut, "GET", f"/v1/studies/{int(study_id)}", **_watch(wait))

    def studies(self, *, page_size: int = 50) -> Iterator[StudySummary]:
        """Studies newest first, across all pages."""
        return self._pages("/v1/studies", StudyPage, {"limit": page_size})

    # --- tokens, users, audit -----------------------------------------------------

    def me(self) -> MeOut:
        """Who this client's token belongs to (name, admin, the token's id and expiry)."""
        return self._call(MeOut, "GET", "/v1/me")

    def catalog(self) -> CatalogOut:
        """What the deployment can run: models, data sets, pruning methods, schedules
        and presets, each with its origin (built in, or a plug-in package and version)."""
        return self._call(CatalogOut, "GET", "/v1/catalog")

    def cluster(self) -> ClusterOut:
        """Why jobs wait and when they may start: the cluster's size and use, each
        owner's use against fair share and the GPU quota, the queue by reason, and
        the head of the queue with estimated starts."""
        return self._call(ClusterOut, "GET", "/v1/cluster")

    def list_tokens(
        self, *, user: str | None = None, include_inactive: bool = False
    ) -> list[TokenOut]:
        """Tokens that still work (``include_inactive``: revoked and expired too); an
        admin sees every user's (or ``user``'s), anyone else their own."""
        params = {"user": user, "all": "true" if include_inactive else None}
        return self._call(TokenList, "GET", "/v1/tokens", params=params).items

    def create_token(
        self, user: str, *, admin: bool = False, expires_in: float | timedelta | None = None
    ) -> TokenCreated:
        """Admins: a new token for ``user`` (created if new); ``.token`` is the token,
        shown this once. ``expires_in``: seconds or a timedelta; None never expires."""
        if isinstance(expires_in, timedelta):
            expires_in = expires_in.total_seconds()
        body: dict[str, Any] = {"user": user, "admin": admin}
        if expires_in is not None:
            body["expires_in_seconds"] = int(expires_in)
        return self._call(TokenCreated, "POST", "/v1/tokens", json=body)

    def revoke_token(self, token_id: int) -> TokenOut:
        """Revoke a token (an admin any, a user their own); every API process refuses
        it within the server's token cache lifetime (1 s by default)."""
        return self._call(TokenOut, "POST", f"/v1/tokens/{int(token_id)}/revoke")

    def list_users(self) -> list[UserOut]:
        return self._call(UserList, "GET", "/v1/users").items

    def update_user(
        self, name: str, *, active: bool | None = None, admin: bool | None = None
    ) -> UserOut:
        """Admins: (de)activate, promote or demote ``name``; None leaves a flag as it is."""
        body = {k: v for k, v in (("active", active), ("admin", admin)) if v is not None}
        return self._call(UserOut, "PATCH", f"/v1/users/{quote(name, safe='')}", json=body)

    def audit(self, *, page_size: int = 50) -> Iterator[AuditEventOut]:
        """Admins: administrative changes newest first, across all pages (lazily)."""
        before = None
        while True:
            page = self._call(
                AuditPage, "GET", "/v1/audit", params={"limit": page_size, "before": before}
            )
            yield from page.items
            if page.next_before is None:
                return
            before = page.next_before
