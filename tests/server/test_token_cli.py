"""The administration commands: ``silo token``, ``silo user`` and ``silo audit`` on
SILO_DATABASE_URL directly, on SQLite and PostgreSQL."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from server.auth.tokens import REVOKED, TokenRefusedError, caller_for_token
from server.db.models import AuditEvent
from server.db.session import make_engine, make_session_factory
from server.settings import get_settings
from silo_client.entry import app

runner = CliRunner()


@pytest.fixture
def factory(database_url):
    engine = make_engine(database_url)
    yield make_session_factory(engine)
    engine.dispose()


def actors(factory) -> set[str]:
    with factory() as session:
        return set(session.scalars(select(AuditEvent.actor)))


@pytest.fixture
def silo(database_url, monkeypatch, tmp_path):
    """``silo ARGS`` in this process on the test's database."""
    monkeypatch.setenv("SILO_DATABASE_URL", database_url)
    monkeypatch.setenv("SILO_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("COLUMNS", "200")

    def invoke(*args: str):
        get_settings.cache_clear()
        try:
            return runner.invoke(app, list(args))
        finally:
            get_settings.cache_clear()

    return invoke


def one_error_line(result) -> str:
    assert result.exit_code != 0
    assert isinstance(result.exception, SystemExit), result.exception  # no traceback
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def test_cli_creates_lists_and_revokes_tokens(silo, factory):
    made = silo("token", "create", "--user", "alice", "--admin", "--expires", "90d")
    assert made.exit_code == 0, made.output
    token = made.stdout.strip()
    assert token.startswith("silo_") and "\n" not in token
    plain = silo("token", "create", "--user", "bob")
    assert plain.exit_code == 0

    listed = json.loads(silo("token", "list", "--json").stdout)
    assert [(t["user"], t["state"]) for t in listed] == [("alice", "active"), ("bob", "active")]
    assert listed[0]["expires_at"] is not None and listed[1]["expires_at"] is None
    table = silo("token", "list", "--user", "alice").stdout
    assert "alice" in table and token[:12] in table and "bob" not in table and token not in table

    revoked = silo("token", "revoke", token[:12])
    assert revoked.exit_code == 0 and f"revoked token {listed[0]['id']}" in revoked.stdout
    assert "already revoked" in silo("token", "revoke", str(listed[0]["id"])).stdout
    assert [t["user"] for t in json.loads(silo("token", "list", "--json").stdout)] == ["bob"]
    every = silo("token", "list", "--all").stdout
    assert "revoked" in every and "by local:" in every
    with factory() as session, pytest.raises(TokenRefusedError, match=REVOKED):
        caller_for_token(session, token)
    (actor,) = actors(factory)
    assert actor.startswith("local:")


@pytest.mark.usefixtures("factory")
def test_cli_deactivates_activates_promotes_demotes_users(silo):
    assert silo("token", "create", "--user", "root", "--admin").exit_code == 0
    assert silo("token", "create", "--user", "carol").exit_code == 0
    assert silo("user", "deactivate", "carol").stdout == "carol deactivated\n"
    assert silo("user", "deactivate", "carol").stdout == "carol was already deactivated\n"
    users = {u["name"]: u for u in json.loads(silo("user", "list", "--json").stdout)}
    assert users["carol"]["active"] is False and users["root"]["admin"] is True
    assert silo("user", "activate", "carol").exit_code == 0
    assert silo("user", "promote", "carol").stdout == "carol promoted\n"
    assert silo("user", "demote", "root").stdout == "root demoted\n"
    table = silo("user", "list").stdout
    assert "carol" in table and "root" in table
    audit = json.loads(silo("audit", "--json", "--limit", "3").stdout)
    assert [e["action"] for e in audit] == ["user.demote", "user.promote", "user.activate"]
    assert "user.deactivate" in silo("audit").stdout


def test_cli_errors_are_one_line(silo, monkeypatch):
    assert silo("token", "create", "--user", "root", "--admin").exit_code == 0
    cases = [
        (("token", "create", "--user", "x", "--expires", "soon"), 2, "--expires:"),
        (("token", "create", "--user", "no spaces"), 2, "--user:"),
        (("token", "revoke", "424242"), 1, "no such token: 424242"),
        (("token", "revoke", "silo_"), 2, "give a token's id"),
        (("token", "list", "--user", "ghost"), 1, "no such user: ghost"),
        (("user", "demote", "root"), 1, "root is the last active admin"),
        (("user", "deactivate", "root"), 1, "root is the last active admin"),
        (("user", "activate", "ghost"), 1, "no such user: ghost"),
    ]
    for args, code, says in cases:
        result = silo(*args)
        assert result.exit_code == code, (args, result.output)
        assert says in one_error_line(result), args
    monkeypatch.setenv("SILO_DATABASE_URL", "postgresql+psycopg://nobody:secret@127.0.0.1:9/x")
    away = silo("token", "list")
    line = one_error_line(away)
    assert away.exit_code == 1 and "127.0.0.1:9" in line and "secret" not in line
