"""Service settings, from ``SILO_*`` environment variables (pydantic-settings).

Everything a team deployment changes is here, never in code: the database, the
artifact root, limits. The embedded default keeps all state in one data folder.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
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
    database_pool_size: int = Field(
        32,
        ge=1,
        description="Database connections the API keeps open (PostgreSQL); cover the "
        "requests served at once (the worker-thread limit is 40)",
    )
    max_request_bytes: int = Field(1_048_576, ge=1024)
    token_cache_seconds: float = Field(
        10.0, ge=0, description="How long a resolved API token is trusted without a lookup"
    )

    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'silo.db'}"

    def resolved_artifact_root(self) -> str:
        return self.artifact_root or str(self.data_dir / "artifacts")


@lru_cache
def get_settings() -> Settings:
    return Settings()
