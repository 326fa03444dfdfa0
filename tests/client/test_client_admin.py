"""SiloClient's token, user and audit methods against the real API (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest

from silo_client import SiloApiError, SiloClient
from silo_contract.accounts import AuditEventOut, MeOut, TokenCreated, TokenOut, UserOut


@pytest.fixture
def root(live_server) -> Iterator[SiloClient]:
    with SiloClient(live_server.base_url, live_server.tokens["root"]) as client:
        yield client


def test_me_and_a_token_made_revoked_and_listed(live_server, api, root):
    assert api.me() == MeOut(
        name="alice",
        admin=False,
        token_id=api.me().token_id,
        token_prefix=live_server.tokens["alice"][:12],
        expires_at=None,
    )
    made = root.create_token("carol", expires_in=timedelta(days=90))
    assert isinstance(made, TokenCreated) and made.token.startswith("silo_")
    assert made.expires_at is not None and made.state == "active"
    with SiloClient(live_server.base_url, made.token) as carol:
        assert carol.me().name == "carol"
        assert [t.id for t in carol.list_tokens()] == [made.id]
        revoked = carol.revoke_token(made.id)  # their own
        assert isinstance(revoked, TokenOut) and revoked.revoked_by == "user:carol"
        with pytest.raises(SiloApiError) as refused:
            carol.me()
    assert (refused.value.status, refused.value.message) == (401, "the token was revoked")
    assert [t.user for t in root.list_tokens(user="carol")] == []
    assert [t.state for t in root.list_tokens(user="carol", include_inactive=True)] == ["revoked"]
    with pytest.raises(SiloApiError) as forbidden:
        api.create_token("mallory")
    assert forbidden.value.status == 403


def test_users_are_updated_and_the_audit_log_reads_back(api, root):
    users = {u.name: u for u in root.list_users()}
    assert isinstance(users["alice"], UserOut) and users["root"].admin
    assert root.update_user("bob", admin=True).admin is True
    off = root.update_user("alice", active=False)
    assert off.active is False
    with pytest.raises(SiloApiError) as refused:
        api.me()
    assert refused.value.message == "the user is deactivated"
    assert root.update_user("alice", active=True).active is True
    with pytest.raises(SiloApiError) as conflict:
        root.update_user("nobody", admin=False)
    assert conflict.value.status == 404
    events = list(root.audit(page_size=1))  # one page per event
    assert all(isinstance(e, AuditEventOut) for e in events)
    assert [e.action for e in events[:3]] == ["user.activate", "user.deactivate", "user.promote"]
    assert events[0].actor == "user:root" and events[0].target == "user:alice"
