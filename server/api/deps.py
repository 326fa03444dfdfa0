"""Request dependencies: the database session and the authenticated user."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Header, Request
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from server.api.errors import ApiError
from server.auth.tokens import Caller, TokenCache
from server.settings import Settings

UNAUTHENTICATED = {"WWW-Authenticate": "Bearer"}


READ_METHODS = frozenset({"GET", "HEAD"})


async def get_session(request: Request) -> AsyncIterator[Session]:
    """A session per request; the route commits what it means to keep.

    GET and HEAD only read, so they get an autocommit session (no BEGIN and
    ROLLBACK round trips around their statements). The dependency is async
    because opening a session does no I/O: a sync one would cost two thread
    hops per request. Closing a read session does none either (nothing to roll
    back); a writing session is closed on a worker thread.
    """
    state = request.app.state
    read_only = request.method in READ_METHODS
    session = (state.read_session_factory if read_only else state.session_factory)()
    try:
        yield session
    finally:
        if read_only:
            session.close()
        else:
            await run_in_threadpool(session.close)


SessionDep = Annotated[Session, Depends(get_session)]


async def app_settings(request: Request) -> Settings:
    """The settings the app was created with (async: no thread hop for a lookup)."""
    return request.app.state.settings


SettingsDep = Annotated[Settings, Depends(app_settings)]


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


async def current_user(
    request: Request, session: SessionDep, authorization: Annotated[str | None, Header()] = None
) -> Caller:
    """The token's user; a recently seen token is answered from the cache, no thread hop."""
    token = bearer_token(authorization)
    cache: TokenCache = request.app.state.token_cache
    user = cache.get(token)
    if user is None:
        user = await run_in_threadpool(cache.resolve, session, token)
    if user is None:
        raise ApiError(
            401, "unauthenticated", "the token is unknown or revoked", headers=UNAUTHENTICATED
        )
    return user


UserDep = Annotated[Caller, Depends(current_user)]


def require_owner_or_admin(user: Caller, owner_id: int, action: str) -> None:
    if not (user.is_admin or user.id == owner_id):
        raise ApiError(403, "forbidden", f"only the job's owner or an admin may {action} it")
