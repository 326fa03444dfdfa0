"""Administration of users and tokens: the one implementation behind the ``silo token``
and ``silo user`` commands and the admin routes (server/api/admin.py).

Every change writes an audit event (who, what, to what, when) in the caller's
transaction; the caller commits. An ``actor`` is ``user:<name>`` for an API
caller, ``local:<unix user>`` for the CLI on the database, ``server`` for the
embedded server's first admin token.
"""

from __future__ import annotations

import getpass
import os
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from server.auth.tokens import PREFIX_LENGTH, USER_TOKEN_PREFIX, hash_token, new_token
from server.db.models import ApiToken, AuditEvent, User
from server.jobs.attempts import take_sqlite_write_lock
from silo_contract.accounts import AuditEventOut, TokenCreated, TokenOut, TokenState, UserOut
from silo_contract.fields import ACTOR_LENGTH, MAX_TOKEN_LIFETIME_SECONDS, USER_NAME_PATTERN

SERVER_ACTOR = "server"
USER_NAME = re.compile(USER_NAME_PATTERN)
_DURATION = re.compile(r"^\s*(\d+)\s*([mhdw])\s*$")
_UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class AdminError(Exception):
    """A change that cannot be made; the message says why, for the one who asked."""


class NotFoundError(AdminError):
    """No such user or token (or none the caller may see)."""


class LastAdminError(AdminError):
    """The change would leave no active admin."""


class InvalidRequestError(AdminError):
    """The request names nothing usable (a bad user name, an ambiguous prefix)."""


def api_actor(user_name: str) -> str:
    return f"user:{user_name}"[:ACTOR_LENGTH]


def local_actor() -> str:
    """``local:<unix user>`` for a change made with the CLI on the database itself."""
    try:
        name = getpass.getuser()
    except (KeyError, OSError):  # a container's uid without a passwd entry
        name = f"uid{os.getuid()}"
    return f"local:{name}"[:ACTOR_LENGTH]


def parse_duration(text: str) -> timedelta:
    """``30m``, ``12h``, ``90d``, ``8w`` as a timedelta; ValueError naming the forms."""
    match = _DURATION.match(text)
    seconds = int(match.group(1)) * _UNITS[match.group(2)] if match else 0
    if not match or seconds <= 0:
        raise ValueError(f"{text!r} is not a duration: a positive number and m, h, d or w (90d)")
    if seconds > MAX_TOKEN_LIFETIME_SECONDS:
        raise ValueError(f"{text!r} is longer than ten years")
    return timedelta(seconds=seconds)


def _now() -> datetime:
    return datetime.now(UTC)


def record(session: Session, actor: str, action: str, target: str, **details: Any) -> None:
    """Write one audit event in the session's transaction."""
    session.add(AuditEvent(at=_now(), actor=actor, action=action, target=target, details=details))


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


# --- tokens -------------------------------------------------------------------------


def token_state(token: ApiToken, now: datetime) -> TokenState:
    if token.revoked_at is not None:
        return "revoked"
    if token.expires_at is not None and token.expires_at <= now:
        return "expired"
    return "active"


def token_out(token: ApiToken, user_name: str, now: datetime | None = None) -> TokenOut:
    return TokenOut(
        id=token.id,
        user=user_name,
        prefix=token.prefix,
        created_at=token.created_at,
        expires_at=token.expires_at,
        state=token_state(token, now or _now()),
        revoked_at=token.revoked_at,
        revoked_by=token.revoked_by,
    )


def find_user(session: Session, name: str, *, lock: bool = False) -> User:
    query = select(User).where(User.name == name)
    if lock:
        query = query.with_for_update().execution_options(populate_existing=True)
    user = session.scalar(query)
    if user is None:
        raise NotFoundError(f"no such user: {name}")
    return user


def create_token(
    session: Session,
    user_name: str,
    *,
    actor: str,
    admin: bool = False,
    expires_in: timedelta | None = None,
) -> TokenCreated:
    """A new token for ``user_name``, created if new; ``admin`` promotes the user
    (never demotes). The plain token is in the answer and nowhere else."""
    if not USER_NAME.match(user_name):
        raise InvalidRequestError(
            f"user name {user_name!r}: 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    now = _now()
    user = session.scalar(select(User).where(User.name == user_name))
    if user is None:
        user = User(name=user_name, is_admin=admin, is_active=True, created_at=now)
        session.add(user)
        session.flush()
        record(session, actor, "user.create", f"user:{user_name}", admin=admin)
    elif admin and not user.is_admin:
        user.is_admin = True
        record(session, actor, "user.promote", f"user:{user_name}")
    plain = new_token()
    token = ApiToken(
        user_id=user.id,
        token_hash=hash_token(plain),
        prefix=plain[:PREFIX_LENGTH],
        created_at=now,
        expires_at=now + expires_in if expires_in is not None else None,
    )
    session.add(token)
    session.flush()
    record(
        session,
        actor,
        "token.create",
        f"token:{token.id}",
        user=user_name,
        prefix=token.prefix,
        expires_at=_iso(token.expires_at),
    )
    return TokenCreated(**token_out(token, user_name, now).model_dump(), token=plain)


def list_tokens(
    session: Session, *, user: str | None = None, include_inactive: bool = False
) -> list[TokenOut]:
    """Tokens oldest first, of one user or all; revoked and expired ones only with
    ``include_inactive``. NotFoundError for an unknown ``user``."""
    now = _now()
    query = select(ApiToken, User.name).join(User, ApiToken.user_id == User.id)
    if user is not None:
        query = query.where(User.id == find_user(session, user).id)
    if not include_inactive:
        query = query.where(
            ApiToken.revoked_at.is_(None),
            or_(ApiToken.expires_at.is_(None), ApiToken.expires_at > now),
        )
    rows = session.execute(query.order_by(ApiToken.id)).all()
    return [token_out(token, name, now) for token, name in rows]


def find_token(session: Session, ref: int | str, *, lock: bool = False) -> ApiToken:
    """A token by id, by (the start of) its prefix, or by the whole plain token."""
    query = select(ApiToken)
    if isinstance(ref, int):
        query = query.where(ApiToken.id == ref)
    elif len(ref) > PREFIX_LENGTH + 4 and ref.startswith(USER_TOKEN_PREFIX):
        query = query.where(ApiToken.token_hash == hash_token(ref))
    elif len(ref) > len(USER_TOKEN_PREFIX):
        query = query.where(ApiToken.prefix.startswith(ref, autoescape=True))
    else:
        raise InvalidRequestError(f"{ref!r}: give a token's id or more of its prefix")
    found = session.scalars((query.with_for_update() if lock else query).limit(2)).all()
    if not found:
        raise NotFoundError(f"no such token: {ref}")
    if len(found) > 1:
        raise InvalidRequestError(f"prefix {ref!r} matches several tokens: give the id")
    return found[0]


def revoke_token(
    session: Session, ref: int | str, *, actor: str, owner_id: int | None = None
) -> tuple[TokenOut, bool]:
    """Revoke a token; ``(token, changed)``: revoking a revoked token changes nothing.
    With ``owner_id``, a token of anyone else is not found (the caller may not learn
    that it exists)."""
    take_sqlite_write_lock(session)
    token = find_token(session, ref, lock=True)
    if owner_id is not None and token.user_id != owner_id:
        raise NotFoundError(f"no such token: {ref}")
    user_name = session.scalar(select(User.name).where(User.id == token.user_id))
    assert user_name is not None  # the foreign key
    changed = token.revoked_at is None
    if changed:
        token.revoked_at, token.revoked_by = _now(), actor
        session.flush()
        record(
            session,
            actor,
            "token.revoke",
            f"token:{token.id}",
            user=user_name,
            prefix=token.prefix,
        )
    return token_out(token, user_name), changed


# --- users --------------------------------------------------------------------------


def _active_tokens(session: Session, now: datetime) -> dict[int, int]:
    rows = session.execute(
        select(ApiToken.user_id, func.count())
        .where(
            ApiToken.revoked_at.is_(None),
            or_(ApiToken.expires_at.is_(None), ApiToken.expires_at > now),
        )
        .group_by(ApiToken.user_id)
    ).all()
    return dict(rows)


def user_out(session: Session, user: User) -> UserOut:
    return UserOut(
        name=user.name,
        admin=user.is_admin,
        active=user.is_active,
        created_at=user.created_at,
        active_tokens=_active_tokens(session, _now()).get(user.id, 0),
    )


def list_users(session: Session) -> list[UserOut]:
    """Every user by name, with how many tokens of each still work."""
    counts = _active_tokens(session, _now())
    users = session.scalars(select(User).order_by(User.name)).all()
    return [
        UserOut(
            name=u.name,
            admin=u.is_admin,
            active=u.is_active,
            created_at=u.created_at,
            active_tokens=counts.get(u.id, 0),
        )
        for u in users
    ]


def _set_flag(
    session: Session, name: str, flag: str, value: bool, *, actor: str, actions: tuple[str, str]
) -> tuple[UserOut, bool]:
    """Set ``users.<flag>`` (``is_active`` or ``is_admin``) and record ``actions[value]``.

    Lowering either flag of the last active admin raises LastAdminError. For
    that check the active admins' rows are locked first, in id order
    (PostgreSQL; on SQLite the write lock is taken), so two admins demoting
    each other at once cannot both succeed, nor deadlock.
    """
    take_sqlite_write_lock(session)
    admins: list[int] = []
    if not value:
        admins = list(
            session.scalars(
                select(User.id)
                .where(User.is_admin, User.is_active)
                .order_by(User.id)
                .with_for_update()
            )
        )
    user = find_user(session, name, lock=True)
    if getattr(user, flag) == value:
        return user_out(session, user), False
    if not value and admins == [user.id]:
        raise LastAdminError(f"{name} is the last active admin: promote another user first")
    setattr(user, flag, value)
    session.flush()
    record(session, actor, actions[value], f"user:{name}")
    return user_out(session, user), True


def set_active(session: Session, name: str, active: bool, *, actor: str) -> tuple[UserOut, bool]:
    """Activate or deactivate a user (every token of a deactivated user is refused;
    the user's jobs stay); ``(user, changed)``. LastAdminError for the last active admin."""
    return _set_flag(
        session,
        name,
        "is_active",
        active,
        actor=actor,
        actions=("user.deactivate", "user.activate"),
    )


def set_admin(session: Session, name: str, admin: bool, *, actor: str) -> tuple[UserOut, bool]:
    """Promote or demote a user; ``(user, changed)``. LastAdminError for the last active
    admin."""
    return _set_flag(
        session, name, "is_admin", admin, actor=actor, actions=("user.demote", "user.promote")
    )


# --- audit --------------------------------------------------------------------------


def audit_page(
    session: Session, *, limit: int = 50, before: int | None = None
) -> tuple[list[AuditEventOut], int | None]:
    """Audit events newest first (by id), ``limit`` of them older than id ``before``;
    the id to pass as ``before`` for the next page, None after the last."""
    query = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit + 1)
    if before is not None:
        query = query.where(AuditEvent.id < before)
    rows = session.scalars(query).all()
    items = [
        AuditEventOut(
            id=e.id, at=e.at, actor=e.actor, action=e.action, target=e.target, details=e.details
        )
        for e in rows[:limit]
    ]
    return items, (items[-1].id if len(rows) > limit else None)
