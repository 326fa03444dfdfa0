"""Bearer tokens: random, shown once, stored only as SHA-256.

A plain SHA-256 (no salt, no slow hash) is enough because the tokens are 256
random bits, not passwords; it also lets a lookup be one indexed equality.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.db.models import ApiToken, User

USER_TOKEN_PREFIX = "silo_"
ATTEMPT_TOKEN_PREFIX = "silo_attempt_"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token(prefix: str = USER_TOKEN_PREFIX) -> str:
    return prefix + secrets.token_urlsafe(32)


def create_user_token(session: Session, user_name: str, *, admin: bool = False) -> str:
    """Create the user if new (admin flag raised, never lowered) and return a new token."""
    user = session.scalar(select(User).where(User.name == user_name))
    if user is None:
        user = User(name=user_name, is_admin=admin)
        session.add(user)
        session.flush()
    elif admin and not user.is_admin:
        user.is_admin = True
    token = new_token()
    session.add(ApiToken(user_id=user.id, token_hash=hash_token(token), prefix=token[:12]))
    return token


def user_for_token(session: Session, token: str) -> User | None:
    """The user owning an unrevoked token, else None."""
    return session.scalar(
        select(User)
        .join(ApiToken, ApiToken.user_id == User.id)
        .where(ApiToken.token_hash == hash_token(token), ApiToken.revoked_at.is_(None))
    )


@dataclass(frozen=True)
class Caller:
    """Who is calling: what the routes need of the token's user, detached from any session."""

    id: int
    name: str
    is_admin: bool


class TokenCache:
    """Token -> Caller for a few seconds, so a status poll skips the token query.

    Only tokens that resolved are kept (an unknown token is looked up every
    time), for at most ``ttl`` seconds: a revoked token or a lowered admin flag
    takes effect within that. ``ttl`` 0 turns the cache off. Hand-written (a
    dict and a lock) because it is this small; it is per process and bounded.
    """

    def __init__(self, ttl: float = 10.0, max_entries: int = 10_000) -> None:
        self.ttl, self.max_entries = ttl, max_entries
        self._entries: dict[str, tuple[float, Caller]] = {}
        self._lock = threading.Lock()

    def get(self, token: str) -> Caller | None:
        """The cached caller for ``token``, or None (not seen lately: call resolve)."""
        key = hash_token(token)
        with self._lock:
            hit = self._entries.get(key)
        return hit[1] if hit is not None and hit[0] > time.monotonic() else None

    def resolve(self, session: Session, token: str) -> Caller | None:
        """Look ``token`` up in the database and remember it if it is good."""
        user = user_for_token(session, token)
        if user is None:
            return None
        caller = Caller(id=user.id, name=user.name, is_admin=user.is_admin)
        if self.ttl > 0:
            with self._lock:
                if len(self._entries) >= self.max_entries:
                    self._entries.clear()
                self._entries[hash_token(token)] = (time.monotonic() + self.ttl, caller)
        return caller
