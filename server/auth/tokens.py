"""Bearer tokens: random, shown once, stored only as SHA-256.

A plain SHA-256 (no salt, no slow hash) is enough because the tokens are 256
random bits, not passwords; it also lets a lookup be one indexed equality.
"""

from __future__ import annotations

import hashlib
import secrets

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
