"""Bearer tokens: random, shown once, stored only as SHA-256; who a token belongs to.

A plain SHA-256 (no salt, no slow hash) is enough because the tokens are 256
random bits, not passwords; it also lets a lookup be one indexed equality.
Creating, revoking and the users' flags are administration: server/auth/admin.py.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from server.changes.book import ALL, USER_KEY_KIND
from server.db.models import ApiToken, User

USER_TOKEN_PREFIX = "silo_"
ATTEMPT_TOKEN_PREFIX = "silo_attempt_"
PREFIX_LENGTH = 12  # what is kept in clear, to recognise a token by

UNKNOWN = "the token is unknown or revoked"
REVOKED = "the token was revoked"
EXPIRED = "the token expired"
DEACTIVATED = "the user is deactivated"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token(prefix: str = USER_TOKEN_PREFIX) -> str:
    return prefix + secrets.token_urlsafe(32)


def create_user_token(session: Session, user_name: str, *, admin: bool = False) -> str:
    """Create the user if new (admin flag raised, never lowered) and return a new
    token, recorded as the server's own doing (``server/auth/admin.create_token``)."""
    from server.auth.admin import SERVER_ACTOR, create_token

    return create_token(session, user_name, admin=admin, actor=SERVER_ACTOR).token


@dataclass(frozen=True)
class Caller:
    """Who is calling: what the routes need of the token and its user, detached from
    any session."""

    id: int
    name: str
    is_admin: bool
    token_id: int
    token_prefix: str
    expires_at: datetime | None = None  # UTC; None: the token does not expire


class TokenRefusedError(Exception):
    """The token does not authenticate; the message says why, for its holder only
    (unknown, revoked, expired, user deactivated)."""


def caller_for_token(session: Session, token: str, now: datetime | None = None) -> Caller:
    """The token's caller, in one indexed statement; TokenRefusedError if the token is
    unknown, revoked or expired, or its user is deactivated."""
    row = session.execute(
        select(
            ApiToken.id,
            ApiToken.prefix,
            ApiToken.revoked_at,
            ApiToken.expires_at,
            User.id,
            User.name,
            User.is_admin,
            User.is_active,
        )
        .join(User, ApiToken.user_id == User.id)
        .where(ApiToken.token_hash == hash_token(token))
    ).one_or_none()
    if row is None:
        raise TokenRefusedError(UNKNOWN)
    token_id, prefix, revoked_at, expires_at, user_id, name, is_admin, is_active = row
    if revoked_at is not None:
        raise TokenRefusedError(REVOKED)
    if expires_at is not None and expires_at <= (now or datetime.now(UTC)):
        raise TokenRefusedError(EXPIRED)
    if not is_active:
        raise TokenRefusedError(DEACTIVATED)
    return Caller(user_id, name, is_admin, token_id, prefix, expires_at)


class TokenCache:
    """Token -> Caller for at most ``ttl`` seconds, so a status poll skips the token query.

    Only tokens that resolved are kept (a refused token is looked up every
    time), until ``ttl`` has passed or the token expires, whichever comes
    first: ``ttl`` bounds how long a revocation, a deactivation, a demotion or
    a deleted user takes to apply in a process that did not make the change
    (the one that did forgets its entries at once). ``ttl`` 0 turns the cache
    off. Hand-written (a dict and a lock) because it is this small; it is per
    process and bounded.
    """

    def __init__(self, ttl: float = 1.0, max_entries: int = 10_000) -> None:
        self.ttl, self.max_entries = ttl, max_entries
        self._entries: dict[str, tuple[float, Caller]] = {}
        self._lock = threading.Lock()

    def get(self, token: str) -> Caller | None:
        """The cached caller for ``token``, or None (not seen lately: call resolve)."""
        key = hash_token(token)
        with self._lock:
            hit = self._entries.get(key)
        return hit[1] if hit is not None and hit[0] > time.monotonic() else None

    def resolve(self, session: Session, token: str) -> Caller:
        """Look ``token`` up in the database and remember it if it is good;
        TokenRefusedError if not."""
        caller = caller_for_token(session, token)
        if self.ttl > 0:
            deadline = time.monotonic() + self.ttl
            if caller.expires_at is not None:
                left = (caller.expires_at - datetime.now(UTC)).total_seconds()
                deadline = min(deadline, time.monotonic() + left)
            with self._lock:
                if len(self._entries) >= self.max_entries:
                    self._entries.clear()
                self._entries[hash_token(token)] = (deadline, caller)
        return caller

    def forget_user(self, user_id: int) -> None:
        """Drop every cached token of the user (their tokens or flags just changed)."""
        with self._lock:
            for key in [k for k, (_, c) in self._entries.items() if c.id == user_id]:
                del self._entries[key]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def forget_changed(self, keys: Collection[str]) -> None:
        """Drop what changed (server/changes/book.py keys): a user's entries for
        ``user:<id>``, everything for ``*``. Another process's revocation applies
        here as soon as its commit is heard, not ``ttl`` later."""
        if ALL in keys:
            self.clear()
            return
        for key in keys:
            kind, _, user_id = key.partition(":")
            if kind == USER_KEY_KIND and user_id.isdigit():
                self.forget_user(int(user_id))


class UnknownCallerError(Exception):
    """The caller's user no longer exists (deleted while its token was cached).
    The API answers it 401, like the token itself would be now."""

    def __init__(self, caller: Caller) -> None:
        super().__init__(UNKNOWN)
        self.caller = caller


def user_exists(session: Session, user_id: int) -> bool:
    return session.scalar(select(User.id).where(User.id == user_id)) is not None


@contextmanager
def caller_writes(session: Session, caller: Caller) -> Iterator[None]:
    """Around a write that refers to the caller's user (a job's or study's owner).

    A caller answered from the token cache may belong to a user deleted since;
    the write then fails on the foreign key. This turns that IntegrityError
    into UnknownCallerError (401) after rolling the session back; any other
    IntegrityError goes on as it was.
    """
    try:
        yield
    except IntegrityError:
        session.rollback()
        if not user_exists(session, caller.id):
            raise UnknownCallerError(caller) from None
        raise
