"""A Python client for the SILO pruning service (httpx; no server imports)."""

from silo_client.client import SiloClient
from silo_client.config import ClientConfig, ConfigError, resolve
from silo_client.errors import (
    ChecksumMismatchError,
    SiloApiError,
    SiloConnectionError,
    SiloError,
)

__all__ = [
    "ChecksumMismatchError",
    "ClientConfig",
    "ConfigError",
    "SiloApiError",
    "SiloClient",
    "SiloConnectionError",
    "SiloError",
    "resolve",
]
