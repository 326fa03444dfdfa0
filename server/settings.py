"""Service settings, from ``SILO_*`` environment variables (pydantic-settings).

Everything a team deployment changes is here, never in code: the database, the
artifact root, limits. The embedded default keeps all state in one data folder.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_data_dir() -> Path:
    return Path.home() / ".local" / "share" / "silo"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SILO_", extra="ignore")

    data_dir: Path = Field(default_factory=_default_data_dir, description="Embedded state")
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL; default sqlite:///<data_dir>/silo.db. "
        "PostgreSQL: postgresql+psycopg://user@host/db",
    )
    artifact_root: str | None = Field(None, description="Default: <data_dir>/artifacts")
    auto_upgrade_sqlite: bool = Field(
        True, description="Let the embedded SQLite database upgrade its own schema on start"
    )
    # One connection per worker thread (anyio's limit of 40): a connection past
    # the pool is closed when returned and opened anew, a new PostgreSQL backend
    # that plans the submit's statement afresh (bench/api_load.py, 64 clients:
    # submits at 0.52x the one-row insert with 32, 0.68x with 40).
    database_pool_size: int = Field(
        40,
        ge=1,
        description="Database connections the API keeps open (PostgreSQL); cover the "
        "requests served at once (the worker-thread limit is 40)",
    )
    max_request_bytes: int = Field(1_048_576, ge=1024)
    max_upload_bytes: int = Field(
        4 * 1024**3,
        ge=1024,
        description="Largest file POST /v1/files takes (streamed to the artifact root, "
        "never held in memory); a larger one is answered 413 and nothing is kept",
    )
    max_header_bytes: int = Field(
        65_536,
        ge=4096,
        description="Largest request head (request line plus all header lines) the API "
        "reads; a longer one is answered 431 and its connection closed",
    )
    token_cache_seconds: float = Field(
        1.0,
        ge=0,
        le=60,
        description="How long an API process trusts a checked token without a lookup: the "
        "bound on how long a revocation, deactivation, demotion or expiry made elsewhere "
        "(another API process, the CLI) takes to apply; 0 looks every token up",
    )

    # --- who may read what ------------------------------------------------------
    read_access: Literal["team", "owner"] = Field(
        "team",
        description="team: every user reads every job, study, log and artifact; owner: "
        "users read only their own (others' are 404, lists show their own), admins all",
    )
    max_streams_per_user: int = Field(
        16,
        ge=1,
        le=10_000,
        description="Event streams and followed logs one user may hold open at once (429 past it)",
    )
    metrics_access: Literal["open", "user", "admin"] = Field(
        "open",
        description="/metrics for anyone (open), for any user's token (user), or admins only",
    )

    # --- compute: Ray and the dispatcher ---------------------------------------
    ray_address: str | None = Field(
        None,
        description="Ray cluster to join (auto, host:port, ray://host:10001); "
        "default: a local head this machine starts and keeps",
    )
    ray_num_cpus: int | None = Field(None, ge=1, description="CPUs of the local head (all)")
    api_url: str | None = Field(
        None,
        description="Address workers report to; `silo serve` fills it in from its own "
        "host and port, a standalone dispatcher needs it",
    )
    dispatcher: bool = Field(True, description="`silo serve` runs a dispatcher too")
    dispatch_interval_seconds: float = Field(0.5, gt=0, le=60)
    max_attempts: int = Field(3, ge=1, le=100, description="Attempts before a job fails")
    cancel_grace_seconds: float = Field(
        60.0, ge=0, description="How long a cancelled job may take to stop before it is killed"
    )
    owner_gpu_quota: float | None = Field(
        None, ge=0, description="GPUs one owner's running jobs may hold at once (no limit)"
    )
    fair_share_window_seconds: float = Field(
        86_400.0, gt=0, description="How far back an owner's GPU-time counts for fair share"
    )
    priority_aging_seconds: float = Field(
        600.0,
        gt=0,
        description="A priority class gains one point per this many seconds its "
        "longest-waiting queued job has waited",
    )
    dispatch_order: Literal["ranked", "fifo"] = Field(
        "ranked",
        description="ranked: priority with aging, then fair share, then age "
        "(server/scheduling.py); fifo: oldest first, ranking off (for comparison). Both "
        "start only jobs within the free resources and the owner's GPU quota",
    )
    preemption: Literal["off", "fair-share"] = Field(
        "off",
        description="fair-share: when the first job waiting for GPUs ranks ahead of running "
        "jobs of owners who hold more GPUs than its owner would with it, stop the fewest "
        "such jobs (newest first) so that it can start; they are queued again and resume "
        "from their checkpoints (server/preemption.py). Ranked order only",
    )
    preemption_min_runtime_seconds: float = Field(
        600.0,
        ge=0,
        description="A job runs at least this long before it may be preempted",
    )
    refuse_unfit_jobs: bool = Field(
        False,
        description="Refuse (422) a job that no node of the cluster could hold, as the "
        "dispatcher last measured the nodes; off: such a job waits and says why",
    )

    @field_validator("artifact_root")
    @classmethod
    def _a_shared_path(cls, value: str | None) -> str | None:
        # Checkpoints are renamed into place, report spools fsynced and logs
        # followed: that takes a file system. Object storage works mounted
        # (mountpoint-s3, gcsfuse, s3fs), not by URL.
        if value is not None and re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", value):
            raise ValueError(
                f"must be a path every node sees (a shared or mounted file system), "
                f"not a URL: {value}"
            )
        return value

    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'silo.db'}"

    def resolved_artifact_root(self) -> str:
        return self.artifact_root or str(self.data_dir / "artifacts")

    def ray_state_dir(self) -> Path:
        return self.data_dir / "ray"


@lru_cache
def get_settings() -> Settings:
    return Settings()


def settings_problems(error: ValidationError) -> list[str]:
    """One line per wrong setting, named as it is set: ``SILO_MAX_ATTEMPTS: ...``."""
    prefix = Settings.model_config.get("env_prefix", "")
    problems = []
    for item in error.errors():
        name = prefix + "_".join(str(part) for part in item["loc"]).upper()
        message = item["msg"].removeprefix("Value error, ")
        problems.append(f"{name}: {message} (got {item.get('input')!r})")
    return problems
