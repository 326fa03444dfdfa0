"""Where the client connects and with which token.

Each value comes from the first place that has it: the ``--server``/``--token``
flags, ``SILO_SERVER``/``SILO_TOKEN``, the config file
(``$XDG_CONFIG_HOME/silo/config.toml``, keys ``server`` and ``token``), then
the embedded server a ``silo serve`` on this machine runs: http://127.0.0.1:8000
with the admin token it wrote to ``<data dir>/admin-token`` (that token is only
ever sent to a server on this machine).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

DEFAULT_SERVER = "http://127.0.0.1:8000"
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


class ConfigError(ValueError):
    """The config file cannot be used; the message names it."""


@dataclass(frozen=True)
class ClientConfig:
    server: str
    token: str | None
    token_source: str  # where the token came from, for "no token" and 401 hints


def config_file(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "silo" / "config.toml"


def embedded_token_file(env: Mapping[str, str] | None = None) -> Path:
    """The admin token of the embedded server. The data dir is re-derived here,
    as server/settings.py defines it, because the client must not import the server."""
    env = os.environ if env is None else env
    data_dir = env.get("SILO_DATA_DIR") or str(Path.home() / ".local" / "share" / "silo")
    return Path(data_dir).expanduser() / "admin-token"


def _is_local(server: str) -> bool:
    return urlsplit(server).hostname in LOCAL_HOSTS


def _read_file(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    values: dict[str, str] = {}
    for key in ("server", "token"):
        if key in data:
            if not isinstance(data[key], str) or not data[key].strip():
                raise ConfigError(f"{path}: {key}: must be a non-empty string")
            values[key] = data[key].strip()
    return values


def resolve(
    server: str | None = None, token: str | None = None, env: Mapping[str, str] | None = None
) -> ClientConfig:
    """The server and token to use; the arguments are the CLI flags (highest priority)."""
    env = os.environ if env is None else env
    path = config_file(env)
    from_file = _read_file(path)
    server = server or env.get("SILO_SERVER") or from_file.get("server") or DEFAULT_SERVER
    for value, source in (
        (token, "--token"),
        (env.get("SILO_TOKEN"), "SILO_TOKEN"),
        (from_file.get("token"), str(path)),
    ):
        if value:
            return ClientConfig(server, value, source)
    # The embedded server's admin token goes to this machine only, never to a
    # remote server that happens to be configured without a token.
    embedded = embedded_token_file(env)
    if _is_local(server) and embedded.is_file():
        return ClientConfig(server, embedded.read_text(encoding="utf-8").strip(), str(embedded))
    return ClientConfig(server, None, "none")
