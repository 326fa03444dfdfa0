"""The CLI's tables and lines: the job list fits the terminal (the name gives way
first, then owner and tags), and the best accuracy says it is validation accuracy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from rich.console import Console

from silo_client.render import age, job_detail, job_table
from silo_client.watch import _member_status
from silo_contract.jobs import JobOut, JobSummary, Progress, QueueInfo, Resources
from silo_contract.studies import MemberOut

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
LONG_NAME = "resnet20-cifar10-silo-alpha0.08-seed3"


def job(job_id: int, **changes) -> JobSummary:
    values = {
        "id": job_id,
        "name": LONG_NAME,
        "owner": "alice",
        "status": "running",
        "priority": 0,
        "tags": ["study-7", "seed-3"],
        "spec_hash": "0" * 16,
        "model": "resnet20",
        "dataset": "cifar10",
        "schedule": "silo",
        "created_at": datetime.now(UTC) - timedelta(hours=3, minutes=1),
        "started_at": None,
        "finished_at": None,
        "attempt": 1,
        "progress": Progress(cycle=4, cycles=25, sparsity=0.5904, best_accuracy=0.9172),
    }
    return JobSummary(**(values | changes))


def lines(width: int, jobs: list[JobSummary]) -> list[str]:
    console = Console(width=width, record=True)
    console.print(job_table(jobs, width))
    return [line.rstrip() for line in console.export_text().splitlines()]


def test_a_narrow_terminal_cuts_the_name_and_leaves_out_owner_and_tags():
    narrow = lines(80, [job(7), job(12, name=None, progress=Progress())])
    assert all(len(line) <= 80 for line in narrow)
    assert narrow[0].split() == [
        "id", "name", "status", "model", "schedule", "cycle", "sparsity", "best", "val", "age",
    ]  # fmt: skip
    cells = narrow[1].split()
    assert cells[0] == "7" and cells[1].endswith("…") and LONG_NAME.startswith(cells[1][:-1])
    assert cells[2:] == ["running", "resnet20", "silo", "4/25", "59.0%", "91.7%", "3h"]
    assert narrow[2].split() == ["12", "running", "resnet20", "silo", "-", "-", "-", "3h"]


def test_a_wide_terminal_shows_every_column_uncut():
    wide = lines(160, [job(7)])
    assert wide[0].split()[-2:] == ["owner", "tags"]
    assert LONG_NAME in wide[1] and wide[1].endswith("alice  study-7,seed-3")


def test_age_is_given_in_its_largest_unit():
    spans = (5, 61, 7200, 3 * 86400)
    ago = {seconds: age(NOW - timedelta(seconds=seconds), NOW) for seconds in spans}
    assert ago == {5: "5s", 61: "1m", 7200: "2h", 3 * 86400: "3d"}
    assert age(NOW + timedelta(seconds=3), NOW) == "0s"  # a clock a little ahead


def test_job_status_shows_the_progress_note_while_there_is_one():
    def detail_lines(progress: Progress) -> list[str]:
        running = job(7, progress=progress).model_dump()
        out = JobOut(
            **running, spec={}, resources=Resources(), error_message=None, queue=QueueInfo()
        )
        console = Console(width=120, record=True)
        console.print(job_detail(out))
        rows = [line.split("│") for line in console.export_text().splitlines()]
        return [" ".join(cell.strip() for cell in row if cell.strip()) for row in rows]

    note = "Oracle search: 12/40 trial epochs, best so far max_lr 0.1 (93.0% val)"
    searching = detail_lines(Progress(cycle=2, cycles=5, note=note))
    assert f"doing {note}" in searching
    assert not any(line.startswith("doing") for line in detail_lines(Progress(cycle=2)))
    # The job's best accuracy is its validation accuracy, and says so.
    assert "best val accuracy 91.72%" in detail_lines(Progress(best_accuracy=0.9172))


def test_a_running_study_member_names_its_best_accuracy_validation_accuracy():
    progress = Progress(cycle=2, cycles=5, epoch=1, epochs=4, sparsity=0.75, best_accuracy=0.9721)
    member = MemberOut(job_id=7, schedule="silo", seed=0, status="running", progress=progress)
    assert _member_status(member) == "cycle 2 epoch 1/4  sparsity 75.0%  best val 97.2%"
    assert _member_status(member.model_copy(update={"status": "queued"})) == "queued"
