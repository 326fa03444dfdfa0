"""Where the client connects: flags > SILO_SERVER/SILO_TOKEN > config file > the local server."""

from __future__ import annotations

from pathlib import Path

import pytest

from silo_client import SiloClient
from silo_client.config import DEFAULT_SERVER, ConfigError, config_file, resolve


@pytest.fixture
def places(tmp_path) -> dict[str, str]:
    """An environment whose config file and data dir are in tmp_path, both filled in."""
    env = {"XDG_CONFIG_HOME": str(tmp_path / "config"), "SILO_DATA_DIR": str(tmp_path / "data")}
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "admin-token").write_text("embedded-token\n")
    path = config_file(env)
    path.parent.mkdir(parents=True)
    path.write_text('server = "http://file:1"\ntoken = "file-token"\n')
    return env


def test_each_value_comes_from_the_first_place_that_has_it(places, tmp_path):
    env = {**places, "SILO_SERVER": "http://env:2", "SILO_TOKEN": "env-token"}
    flags = resolve(server="http://flag:3", token="flag-token", env=env)
    assert (flags.server, flags.token, flags.token_source) == (
        "http://flag:3",
        "flag-token",
        "--token",
    )
    from_env = resolve(env=env)
    assert (from_env.server, from_env.token) == ("http://env:2", "env-token")
    from_file = resolve(env=places)
    assert (from_file.server, from_file.token) == ("http://file:1", "file-token")
    assert from_file.token_source == str(tmp_path / "config" / "silo" / "config.toml")


def test_without_any_setting_it_is_the_local_server_with_its_admin_token(places, tmp_path):
    config_file(places).unlink()
    config = resolve(env=places)
    assert (config.server, config.token) == (DEFAULT_SERVER, "embedded-token")
    assert config.token_source == str(tmp_path / "data" / "admin-token")


def test_the_local_admin_token_is_never_sent_to_another_server(places):
    config_file(places).unlink()
    config = resolve(server="https://silo.example.org", env=places)
    assert config.token is None


def test_the_config_file_defaults_to_the_home_config_folder():
    assert config_file({}) == Path.home() / ".config" / "silo" / "config.toml"


@pytest.mark.parametrize(
    ("content", "problem"),
    [("server = [", "not valid TOML"), ("token = 3", "token: must be a non-empty string")],
)
def test_a_broken_config_file_is_named_with_its_problem(places, content, problem):
    config_file(places).write_text(content)
    with pytest.raises(ConfigError) as caught:
        resolve(env=places)
    assert str(caught.value).startswith(str(config_file(places)))
    assert problem in str(caught.value)


def test_from_config_builds_a_client_for_the_resolved_server(places, monkeypatch):
    for name, value in places.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("SILO_SERVER", raising=False)
    monkeypatch.delenv("SILO_TOKEN", raising=False)
    with SiloClient.from_config() as client:
        assert client.base_url == "http://file:1"
