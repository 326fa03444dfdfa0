"""One attempt of one job: run silo_core's engine and report everything to the API.

This is what a job's Ray actor runs (workers/ray_actor.py only wraps it), and it needs
nothing from the server but what the order carries: the API address, the
attempt's token, the spec, and the artifact root (a local or shared path),
laid out as silo_contract/layout.py says.
"""

from __future__ import annotations

import hashlib
import logging
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from silo_contract.layout import (
    attempt_folder,
    attempt_log,
    checkpoint_folder,
    dense_folder,
    oracle_folder,
    output_folder,
)
from silo_contract.order import AttemptOrder
from silo_core.engine.checkpoint import LocalCheckpointStore
from silo_core.engine.dense_sharing import LocalDenseCache
from silo_core.engine.oracle import OracleSearch
from silo_core.engine.runner import PruningEngine
from silo_core.local_run import write_outputs
from silo_core.spec import JobSpec, parse_spec
from workers.reporter import ApiReporter, IntakeClient, ReportSpool

log = logging.getLogger("silo.workers.attempt")

FLUSH_SECONDS = 600.0  # how long a finished attempt waits for the API to take its reports


@dataclass(frozen=True)
class AttemptOutcome:
    status: str  # succeeded | failed | cancelled | superseded
    message: str | None = None
    undelivered: int = 0  # reports still in the spool when the attempt gave up waiting


def dense_cache(artifact_root: str | Path) -> LocalDenseCache:
    """The dense trainings shared by every job under this artifact root."""
    return LocalDenseCache(dense_folder(artifact_root))


class _AttemptLog:
    """Everything the worker logs while the attempt runs, into the attempt's log file."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.handler = logging.FileHandler(path, encoding="utf-8")
        self.handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        )
        self.root = logging.getLogger()

    def __enter__(self) -> None:
        self.root.addHandler(self.handler)
        # One line per HTTP request would bury the job's own lines.
        logging.getLogger("httpx").setLevel(logging.WARNING)
        if self.root.level > logging.INFO:
            self.previous_level = self.root.level
            self.root.setLevel(logging.INFO)

    def __exit__(self, *_: object) -> None:
        self.root.removeHandler(self.handler)
        self.handler.close()
        if hasattr(self, "previous_level"):
            self.root.setLevel(self.previous_level)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def run_attempt(
    order: AttemptOrder,
    *,
    reporter: ApiReporter | None = None,
    oracle_search: Callable[[JobSpec, Path], OracleSearch | None] | None = None,
) -> AttemptOutcome:
    """Run the attempt to its end and report it; never raises for a failing job.

    ``oracle_search`` picks where an Oracle job's trials run, given the spec and
    a folder for them (the Ray actor passes Tune's); by default the engine runs
    them itself."""
    with _AttemptLog(attempt_log(order.artifact_root, order.job_id, order.attempt)):
        log.info("job %s attempt %s starts", order.job_id, order.attempt)
        outcome = _run_and_report(order, reporter, oracle_search)
        log.info(
            "job %s attempt %s ends: %s%s",
            order.job_id,
            order.attempt,
            outcome.status,
            f" ({outcome.undelivered} reports undelivered)" if outcome.undelivered else "",
        )
    return outcome


def _run_and_report(
    order: AttemptOrder,
    reporter: ApiReporter | None,
    oracle_search: Callable[[JobSpec, Path], OracleSearch | None] | None,
) -> AttemptOutcome:
    if reporter is None:
        client = IntakeClient(order.api_url, order.job_id, order.attempt, order.token)
        spool = ReportSpool(attempt_folder(order.artifact_root, order.job_id, order.attempt))
        reporter = ApiReporter(client, spool)
    try:
        outcome = _run(order, reporter, oracle_search)
    except Exception as exc:  # the job failed; the worker reports it and lives on
        log.error(
            "job %s attempt %s failed:\n%s", order.job_id, order.attempt, traceback.format_exc()
        )
        message = f"{type(exc).__name__}: {exc}"
        reporter.status("failed", message)
        outcome = AttemptOutcome("failed", message)
    delivered = reporter.close(timeout=FLUSH_SECONDS)
    if reporter.superseded and outcome.status != "superseded":
        log.warning("job %s attempt %s was superseded", order.job_id, order.attempt)
    pending = 0 if delivered else len(reporter.spool) - reporter.spool.delivered
    return AttemptOutcome(outcome.status, outcome.message, pending)


def _run(
    order: AttemptOrder,
    reporter: ApiReporter,
    oracle_search: Callable[[JobSpec, Path], OracleSearch | None] | None,
) -> AttemptOutcome:
    spec = parse_spec(order.spec)
    reporter.status("running")
    for earlier in range(1, order.attempt):
        spool = attempt_folder(order.artifact_root, order.job_id, earlier)
        if (spool / "reports.jsonl").exists():
            taken = reporter.adopt(ReportSpool(spool))
            if taken:
                log.info("reporting %d undelivered reports of attempt %d", taken, earlier)
    engine = PruningEngine(
        spec,
        reporter=reporter,
        store=LocalCheckpointStore(checkpoint_folder(order.artifact_root, order.job_id)),
        dense_cache=dense_cache(order.artifact_root),
        should_stop=reporter.should_stop,
        oracle_search=(
            oracle_search(spec, oracle_folder(order.artifact_root, order.job_id))
            if oracle_search
            else None
        ),
        on_start=lambda start: log.info("job %s %s", order.job_id, start),
        weights=order.weights,
    )
    log.info("spec %s: %s on %s", spec.identity(), spec.model.name, spec.dataset.name)
    result = engine.run()
    if reporter.superseded:
        return AttemptOutcome("superseded")
    if result.stopped:
        reporter.status("cancelled")
        return AttemptOutcome("cancelled")
    output = output_folder(order.artifact_root, order.job_id)
    write_outputs(result, spec, output)
    for path in sorted(output.iterdir()):
        reporter.artifact(path.name, path.stat().st_size, sha256_of(path), str(path.resolve()))
    reporter.status("succeeded")
    return AttemptOutcome("succeeded")
