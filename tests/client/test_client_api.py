"""SiloClient against the real API under uvicorn (SQLite and PostgreSQL)."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import httpx
import pytest
from tiny_jobs import EPOCHS, SPEC, run_job

from silo_client import ChecksumMismatchError, SiloApiError, SiloClient
from silo_contract.jobs import JobOut, JobSummary
from silo_contract.reports import CycleOut, EventOut
from silo_contract.studies import StudyOut

STUDY_BASE = {**SPEC, "schedule": {"name": "silo"}}


def test_submit_returns_the_job_as_the_api_models(api):
    job = api.submit(
        SPEC, priority=5, name="first", tags=["a", "b"], resources={"cpus": 2, "gpus": 0.5}
    )
    assert isinstance(job, JobOut)
    assert (job.status, job.priority, job.name, job.tags) == ("queued", 5, "first", ["a", "b"])
    assert (job.resources.cpus, job.resources.gpus) == (2, 0.5)
    assert job.queue.position == 1
    assert api.get(job.id) == job


def test_jobs_iterates_through_every_page_newest_first(api):
    ids = [api.submit(SPEC, tags=["odd"] if i % 2 else []).id for i in range(5)]
    listed = list(api.jobs(page_size=2))  # three pages of at most two
    assert all(isinstance(job, JobSummary) for job in listed)
    assert [job.id for job in listed] == ids[::-1]
    assert [job.id for job in api.jobs(tag="odd", page_size=1)] == [ids[3], ids[1]]
    api.cancel(ids[0])
    assert [job.id for job in api.jobs(status=["cancelled"])] == [ids[0]]
    assert [job.id for job in api.jobs(owner="bob")] == []


def test_events_cycles_and_logs_of_a_finished_job(api, finished_job):
    events = list(api.events(finished_job, page_size=4))  # two pages
    assert all(isinstance(event, EventOut) for event in events)
    assert len(events) == EPOCHS
    seqs = [event.seq for event in events]
    assert seqs == sorted(set(seqs))
    assert [event.seq for event in api.events(finished_job, after=seqs[2])] == seqs[3:]
    assert list(api.events(finished_job, after=seqs[-1])) == []
    cycles = api.cycles(finished_job)
    assert all(isinstance(row, CycleOut) for row in cycles)
    assert [row.cycle for row in cycles] == [0, 1, 2]
    lines = list(api.logs(finished_job))
    assert lines[0] == "=== attempt 1 ==="
    assert lines[-1].endswith("ends: succeeded")
    assert list(api.logs(finished_job, attempt=1, follow=True)) == lines  # ends: job is final


def test_stream_follows_a_queued_job_and_ends_when_it_ends(live_server, api):
    job = api.submit(SPEC)
    worker = threading.Thread(target=run_job, args=(live_server,))
    first_status = api.get(job.id).status
    worker.start()  # the stream below starts while the job is still queued
    events = list(api.stream(job.id, poll=0.05))
    worker.join(timeout=60)
    assert first_status == "queued"
    assert [event.epoch for event in events] == [1, 2] * 3
    assert [event.seq for event in events] == sorted({event.seq for event in events})
    assert api.get(job.id).status == "succeeded"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_download_checks_every_sha256_and_refuses_a_corrupted_file(
    live_server, api, finished_job, tmp_path
):
    artifacts = {a.name: a for a in api.artifacts(finished_job)}
    paths = api.download(finished_job, tmp_path / "good")
    assert sorted(p.name for p in paths) == sorted(artifacts)
    for path in paths:
        assert _sha256(path) == artifacts[path.name].checksum
        assert path.stat().st_size == artifacts[path.name].size
    assert not list((tmp_path / "good").glob("*.part"))

    # The stored file changes after its checksum was registered: the download must notice.
    root = Path(live_server.app.state.settings.resolved_artifact_root())
    stored = root / "jobs" / str(finished_job) / "output" / "cycles.csv"
    stored.write_bytes(stored.read_bytes() + b"tampered\n")
    with pytest.raises(ChecksumMismatchError) as caught:
        api.download(finished_job, tmp_path / "bad")
    assert caught.value.name == "cycles.csv"
    assert caught.value.expected == artifacts["cycles.csv"].checksum
    assert not (tmp_path / "bad" / "cycles.csv").exists()
    assert not (tmp_path / "bad" / "cycles.csv.part").exists()


def test_cancel_and_retry_move_the_job_and_refuse_an_illegal_step(api):
    job = api.submit(SPEC)
    assert api.cancel(job.id).status == "cancelled"
    assert list(api.stream(job.id, poll=0.05)) == []  # already final: ends at once
    assert api.retry(job.id).status == "queued"
    with pytest.raises(SiloApiError) as caught:
        api.retry(job.id)
    assert (caught.value.status, caught.value.code) == (409, "illegal_transition")


def test_a_study_is_submitted_shown_and_listed(api):
    study = api.submit_study(
        STUDY_BASE, [{"name": "silo"}, {"name": "lr_rewind"}], [0, 1], name="cmp", tags=["s"]
    )
    assert isinstance(study, StudyOut)
    assert study.schedules == ["silo", "lr_rewind"]
    assert study.status == {"queued": 4}
    assert [(m.schedule, m.seed) for m in study.members] == [
        ("silo", 0),
        ("silo", 1),
        ("lr_rewind", 0),
        ("lr_rewind", 1),
    ]
    assert api.study(study.id) == study
    other = api.submit_study(STUDY_BASE, [{"name": "silo"}], [0])
    assert [s.id for s in api.studies(page_size=1)] == [other.id, study.id]


def test_api_errors_carry_status_code_and_the_field_on_one_line(live_server, api):
    with pytest.raises(SiloApiError) as missing:
        api.get(999_999)
    assert (missing.value.status, missing.value.code) == (404, "not_found")
    assert str(missing.value) == "no such job [HTTP 404 not_found]"

    bad = {**SPEC, "pruning": {**SPEC["pruning"], "fraction": 2}}
    with pytest.raises(SiloApiError) as invalid:
        api.submit(bad)
    assert (invalid.value.status, invalid.value.code) == (422, "invalid_spec")
    assert invalid.value.fields == ["spec.pruning.fraction"]
    assert "spec.pruning.fraction" in str(invalid.value) and "\n" not in str(invalid.value)

    with pytest.raises(SiloApiError) as study:
        api.submit_study(STUDY_BASE, [{"name": "silo", "beta": -1}], [0])
    assert study.value.fields == ["schedules[0].beta"]

    with (
        SiloClient(live_server.base_url, "not-a-token") as stranger,
        pytest.raises(SiloApiError) as refused,
    ):
        stranger.get(1)
    assert refused.value.status == 401


def test_the_client_asks_again_with_the_etag_and_reuses_a_304(api):
    """A repeated read sends If-None-Match; the server answers 304 and the client
    gives back the answer it held, as the model."""
    job = api.submit(SPEC)
    sent: list[tuple[str | None, int]] = []

    def record(response: httpx.Response) -> None:
        sent.append((response.request.headers.get("If-None-Match"), response.status_code))

    api._http.event_hooks["response"].append(record)
    first, second = api.get(job.id), api.get(job.id)
    assert first == second and second.status == "queued"
    assert sent[0][0] is None and sent[1][0] is not None and sent[1][1] == 304
    api.cancel(job.id)
    assert api.get(job.id).status == "cancelled"
    assert sent[-1][1] == 200


def test_wait_watches_the_job_instead_of_polling_it(live_server, api):
    """``wait`` returns at the job's end, having asked a handful of times, not once
    every poll."""
    job = api.submit(SPEC)
    requests: list[str] = []
    api._http.event_hooks["request"].append(lambda request: requests.append(str(request.url)))
    worker = threading.Thread(target=run_job, args=(live_server,))
    worker.start()
    ended = api.wait(job.id, poll=0.01)
    worker.join(timeout=60)
    assert ended.status == "succeeded"
    watches = [url for url in requests if "wait=" in url]
    assert watches, requests
    # A job of 13 epochs changes a few dozen times; polling every 10 ms would ask hundreds.
    assert len(requests) < 100, len(requests)
