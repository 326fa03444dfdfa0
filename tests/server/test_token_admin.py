"""Token and user administration (server/auth/admin.py), the token checks and cache,
and their migration, on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from alembic import command
from sqlalchemy import inspect, select, text
from sqlalchemy.exc import IntegrityError

from server.auth import admin
from server.auth.tokens import (
    DEACTIVATED,
    EXPIRED,
    REVOKED,
    TokenCache,
    TokenRefusedError,
    UnknownCallerError,
    caller_for_token,
    caller_writes,
    create_user_token,
    hash_token,
)
from server.db.migrate import alembic_config, current_revision, upgrade
from server.db.models import ApiToken, AuditEvent, User
from server.db.session import make_engine, make_session_factory
from server.jobs import repository as repo
from silo_core.spec import parse_spec

SPEC = parse_spec(
    {"model": {"name": "mlp"}, "pruning": {"cycles": 1}, "schedule": {"name": "fine_tune"}}
)


@pytest.fixture
def factory(database_url):
    engine = make_engine(database_url)
    yield make_session_factory(engine)
    engine.dispose()


def events(factory) -> list[tuple[str, str, str]]:
    with factory() as session:
        rows = session.scalars(select(AuditEvent).order_by(AuditEvent.id)).all()
        return [(e.actor, e.action, e.target) for e in rows]


# --- the functions -------------------------------------------------------------------


def test_parse_duration_takes_minutes_hours_days_weeks():
    assert admin.parse_duration("30m") == timedelta(minutes=30)
    assert admin.parse_duration("12h") == timedelta(hours=12)
    assert admin.parse_duration("90d") == timedelta(days=90)
    assert admin.parse_duration("8w") == timedelta(weeks=8)
    for bad in ("", "0d", "5", "3y", "-1d", "1.5h", "9999w"):
        with pytest.raises(ValueError, match=r"duration|ten years"):
            admin.parse_duration(bad)


def test_create_list_revoke_record_who_did_what(factory):
    with factory.begin() as session:
        first = admin.create_token(session, "alice", actor="local:ops", admin=True)
        second = admin.create_token(
            session, "alice", actor="local:ops", expires_in=timedelta(days=90)
        )
    assert first.token.startswith("silo_") and first.prefix == first.token[:12]
    assert first.expires_at is None and first.state == "active"
    assert second.expires_at is not None and second.expires_at > second.created_at
    with factory() as session:
        assert caller_for_token(session, second.token).name == "alice"
        listed = admin.list_tokens(session, user="alice")
    assert [t.id for t in listed] == [first.id, second.id]
    assert all(not hasattr(t, "token") for t in listed)  # never the plain token again

    with factory.begin() as session:  # by prefix, as `silo token revoke silo_abc...` does
        revoked, changed = admin.revoke_token(session, second.prefix, actor="user:root")
    assert changed and revoked.state == "revoked" and revoked.revoked_by == "user:root"
    with factory.begin() as session:
        again, changed = admin.revoke_token(session, second.id, actor="user:root")
    assert not changed and again.revoked_by == "user:root"
    with factory() as session:
        assert [t.id for t in admin.list_tokens(session)] == [first.id]
        everything = admin.list_tokens(session, include_inactive=True)
        assert [t.state for t in everything] == ["active", "revoked"]
        with pytest.raises(TokenRefusedError, match=REVOKED):
            caller_for_token(session, second.token)
    assert events(factory) == [
        ("local:ops", "user.create", "user:alice"),
        ("local:ops", "token.create", f"token:{first.id}"),
        ("local:ops", "token.create", f"token:{second.id}"),
        ("user:root", "token.revoke", f"token:{second.id}"),
    ]


def test_a_whole_token_or_an_unambiguous_prefix_finds_it(factory):
    with factory.begin() as session:
        made = [admin.create_token(session, "bob", actor="server") for _ in range(3)]
    with factory() as session:
        assert admin.find_token(session, made[1].token).id == made[1].id
        assert admin.find_token(session, made[2].prefix[:9]).id == made[2].id
        with pytest.raises(admin.InvalidRequestError, match="give a token's id"):
            admin.find_token(session, "silo_")
        with pytest.raises(admin.NotFoundError, match="no such token"):
            admin.find_token(session, 999_999)
        with pytest.raises(admin.NotFoundError, match="no such token"):
            admin.find_token(session, "silo_nothing_like_it")


def test_a_user_may_revoke_only_their_own_and_learns_nothing_of_others(factory):
    with factory.begin() as session:
        alices = admin.create_token(session, "alice", actor="server")
        bobs = admin.create_token(session, "bob", actor="server")
        bob_id = session.scalar(select(User.id).where(User.name == "bob"))
    refused = pytest.raises(admin.NotFoundError, match=f"no such token: {alices.id}")
    with factory.begin() as session, refused:
        admin.revoke_token(session, alices.id, actor="user:bob", owner_id=bob_id)
    with factory.begin() as session:
        assert admin.revoke_token(session, bobs.id, actor="user:bob", owner_id=bob_id)[1]


def test_deactivated_users_and_expired_tokens_are_refused_each_with_its_reason(factory):
    with factory.begin() as session:
        root = admin.create_token(session, "root", actor="server", admin=True)
        carol = admin.create_token(session, "carol", actor="server")
        brief = admin.create_token(
            session, "dave", actor="server", expires_in=timedelta(seconds=0.6)
        )
    with factory.begin() as session:
        user, changed = admin.set_active(session, "carol", False, actor="user:root")
    assert changed and not user.active and user.active_tokens == 1
    with factory() as session:
        with pytest.raises(TokenRefusedError, match=DEACTIVATED):
            caller_for_token(session, carol.token)
        assert caller_for_token(session, brief.token).name == "dave"
    time.sleep(0.7)
    with factory() as session:
        with pytest.raises(TokenRefusedError, match=EXPIRED):
            caller_for_token(session, brief.token)
        states = {t.user: t.state for t in admin.list_tokens(session, include_inactive=True)}
        assert states == {"root": "active", "carol": "active", "dave": "expired"}
        assert {u.name: u.active_tokens for u in admin.list_users(session)} == {
            "carol": 1,
            "dave": 0,
            "root": 1,
        }
    with factory.begin() as session:
        admin.set_active(session, "carol", True, actor="user:root")
    with factory() as session:
        assert caller_for_token(session, carol.token).name == "carol"
        assert caller_for_token(session, root.token).is_admin


def test_the_last_active_admin_cannot_be_demoted_or_deactivated(factory):
    with factory.begin() as session:
        admin.create_token(session, "root", actor="server", admin=True)
        admin.create_token(session, "carol", actor="server")
    for change in (admin.set_admin, admin.set_active):
        with factory.begin() as session, pytest.raises(admin.LastAdminError, match="last"):
            change(session, "root", False, actor="local:ops")
    with factory.begin() as session:
        assert admin.set_admin(session, "carol", True, actor="local:ops")[1]
    with factory.begin() as session:  # now there is another admin
        assert admin.set_admin(session, "root", False, actor="local:ops")[1]
    with factory.begin() as session, pytest.raises(admin.LastAdminError):
        admin.set_active(session, "carol", False, actor="local:ops")
    with factory.begin() as session:  # an inactive admin does not count as one
        assert admin.set_admin(session, "root", True, actor="local:ops")[1]
        assert admin.set_active(session, "carol", False, actor="local:ops")[1]
    with factory.begin() as session, pytest.raises(admin.LastAdminError):
        admin.set_admin(session, "root", False, actor="local:ops")
    with factory.begin() as session, pytest.raises(admin.NotFoundError, match="no such user"):
        admin.set_admin(session, "nobody", True, actor="local:ops")
    assert [a for _, a, _ in events(factory)][-4:] == [
        "user.promote",
        "user.demote",
        "user.promote",
        "user.deactivate",
    ]


def test_audit_pages_go_newest_first(factory):
    with factory.begin() as session:
        for name in ("u1", "u2", "u3"):
            admin.create_token(session, name, actor="server")
    with factory() as session:
        first, before = admin.audit_page(session, limit=4)
        rest, after = admin.audit_page(session, limit=4, before=before)
    ids = [e.id for e in first + rest]
    assert len(ids) == 6 and ids == sorted(ids, reverse=True) and after is None
    assert first[0].action == "token.create" and first[0].details["user"] == "u3"


def test_the_cache_honours_a_tokens_expiry_exactly(factory):
    with factory.begin() as session:
        brief = admin.create_token(
            session, "dave", actor="server", expires_in=timedelta(seconds=0.5)
        )
    cache = TokenCache(ttl=60)
    with factory() as session:
        assert cache.resolve(session, brief.token).name == "dave"
    assert cache.get(brief.token) is not None
    remaining = (brief.expires_at - brief.created_at).total_seconds()
    time.sleep(remaining + 0.05)
    assert cache.get(brief.token) is None  # not 60 s: the token's own end
    with factory() as session, pytest.raises(TokenRefusedError, match=EXPIRED):
        cache.resolve(session, brief.token)


def test_a_write_for_a_deleted_caller_raises_unknown_caller_not_integrity_error(factory):
    with factory.begin() as session:
        token = create_user_token(session, "carol")
        kept = create_user_token(session, "dave")
    with factory() as session:
        caller = TokenCache(ttl=60).resolve(session, token)
        present = caller_for_token(session, kept)
    with factory.begin() as session:
        session.execute(User.__table__.delete().where(User.id == caller.id))

    def submit(session, owner_id):
        return repo.submit_job(
            session,
            owner_id=owner_id,
            spec=SPEC,
            priority=0,
            name=None,
            tags=[],
            resources={"cpus": 1.0, "gpus": 0.0, "memory_gb": None},
            idempotency_key="k1",
            body_hash="b",
        )

    with factory() as session:
        with pytest.raises(UnknownCallerError), caller_writes(session, caller):
            submit(session, caller.id)
        # A caller who exists gets the integrity error as it was.
        with pytest.raises(IntegrityError), caller_writes(session, present):
            session.add(User(name="root"))
            session.add(User(name="root"))
            session.commit()


# --- the migration ---------------------------------------------------------------------


def test_migration_0006_upgrades_from_0004_keeps_tokens_working_and_downgrades(
    empty_database_url,
):
    url = empty_database_url
    upgrade(url, "0004")
    engine = make_engine(url)
    with engine.begin() as connection:  # rows as the older schema wrote them
        connection.execute(
            text("INSERT INTO users (name, is_admin, created_at) VALUES ('old', :yes, :now)"),
            {"yes": True, "now": "2026-01-01 00:00:00"},
        )
        connection.execute(
            text(
                "INSERT INTO api_tokens (user_id, token_hash, prefix, created_at) "
                "SELECT id, :hash, 'silo_oldtoke', created_at FROM users"
            ),
            {"hash": hash_token("silo_old-token")},
        )
        connection.execute(  # a job refers to the user: its table must not be recreated
            text(
                "INSERT INTO jobs (owner_id, spec, spec_hash, status, priority, created_at, "
                "attempt, event_seq) SELECT id, '{}', 'h', 'queued', 0, created_at, 0, 0 FROM users"
            )
        )
    factory = make_session_factory(engine)
    upgrade(url, "0006")
    assert current_revision(engine) == "0006"
    with factory() as session:
        caller = caller_for_token(session, "silo_old-token")
        assert caller.name == "old" and caller.is_admin and caller.expires_at is None
        token = session.scalar(select(ApiToken))
        assert token.revoked_by is None
    command.downgrade(alembic_config(url), "0004")
    assert current_revision(engine) == "0004"
    engine.dispose()
    engine = make_engine(url)  # a fresh inspector: SQLite's batch mode recreated tables
    inspector = inspect(engine)
    assert "audit_events" not in inspector.get_table_names()
    assert "is_active" not in {c["name"] for c in inspector.get_columns("users")}
    token_columns = {c["name"] for c in inspector.get_columns("api_tokens")}
    assert not token_columns & {"expires_at", "revoked_by"}
    with engine.connect() as connection:  # the token outlived the round trip
        assert connection.execute(text("SELECT prefix FROM api_tokens")).scalars().all() == [
            "silo_oldtoke"
        ]
    upgrade(url, "0006")
    assert current_revision(engine) == "0006"
    engine.dispose()
