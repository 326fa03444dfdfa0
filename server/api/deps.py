"""Request dependencies: the database session and the authenticated user."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from server.api.errors import UNAUTHENTICATED, ApiError
from server.auth.tokens import Caller, TokenCache, TokenRefusedError
from server.settings import Settings

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


# The OpenAPI document's two bearer schemes; the tokens themselves are checked below.
user_bearer = HTTPBearer(
    scheme_name="UserToken",
    description="A user's API token (`silo token create`, POST /v1/tokens)",
    auto_error=False,
)
attempt_bearer = HTTPBearer(
    scheme_name="AttemptToken",
    description="The token the dispatcher minted for one attempt of one job (workers only)",
    auto_error=False,
)
UserCredentials = Annotated[HTTPAuthorizationCredentials | None, Depends(user_bearer)]
AttemptCredentials = Annotated[HTTPAuthorizationCredentials | None, Depends(attempt_bearer)]


def bearer_token(credentials: HTTPAuthorizationCredentials | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header, else 401."""
    if credentials is None or not credentials.credentials.strip():
        raise ApiError(
            401, "unauthenticated", "send Authorization: Bearer <token>", headers=UNAUTHENTICATED
        )
    return credentials.credentials.strip()


async def authenticate(request: Request, token: str) -> Caller:
    """The token's caller; a recently seen token is answered from the cache, no thread
    hop and no session. 401 says why a token is refused (unknown, revoked, expired,
    user deactivated)."""
    cache: TokenCache = request.app.state.token_cache
    user = cache.get(token)
    if user is None:
        sessions = request.app.state.read_session_factory
        try:
            user = await run_in_threadpool(_look_up, cache, sessions, token)
        except TokenRefusedError as exc:
            raise ApiError(401, "unauthenticated", str(exc), headers=UNAUTHENTICATED) from None
    return user


def _look_up(cache: TokenCache, sessions: sessionmaker, token: str) -> Caller:
    """The token's caller from the database, on a session of its own that gives its
    connection back at once. The route waits for a worker thread next, and a
    connection kept while waiting deadlocks a burst of requests: every thread
    waits for a connection that a request waiting for a thread holds, until the
    pool's timeout (500)."""
    with sessions() as session:
        return cache.resolve(session, token)


async def current_user(request: Request, credentials: UserCredentials) -> Caller:
    """The caller behind the request's user token."""
    return await authenticate(request, bearer_token(credentials))


UserDep = Annotated[Caller, Depends(current_user)]


def require_admin(user: Caller, action: str) -> None:
    if not user.is_admin:
        raise ApiError(403, "forbidden", f"only an admin may {action}")


def require_owner_or_admin(user: Caller, owner_id: int, action: str) -> None:
    if not (user.is_admin or user.id == owner_id):
        raise ApiError(403, "forbidden", f"only the job's owner or an admin may {action} it")
