"""Request dependencies: the database session and the authenticated user."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Header, Request
from sqlalchemy.orm import Session

from server.api.errors import ApiError
from server.auth.tokens import user_for_token
from server.db.models import User

UNAUTHENTICATED = {"WWW-Authenticate": "Bearer"}


def get_session(request: Request) -> Iterator[Session]:
    """A session per request; the route commits what it means to keep."""
    with request.app.state.session_factory() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise ApiError(
            401, "unauthenticated", "send Authorization: Bearer <token>", headers=UNAUTHENTICATED
        )
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(
            401,
            "unauthenticated",
            "the Authorization header must be 'Bearer <token>'",
            headers=UNAUTHENTICATED,
        )
    return token.strip()


def current_user(
    session: SessionDep, authorization: Annotated[str | None, Header()] = None
) -> User:
    user = user_for_token(session, bearer_token(authorization))
    if user is None:
        raise ApiError(
            401, "unauthenticated", "the token is unknown or revoked", headers=UNAUTHENTICATED
        )
    return user


UserDep = Annotated[User, Depends(current_user)]


def require_owner_or_admin(user: User, owner_id: int, action: str) -> None:
    if not (user.is_admin or user.id == owner_id):
        raise ApiError(403, "forbidden", f"only the job's owner or an admin may {action} it")
