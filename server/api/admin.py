"""Tokens, users and the audit log: who a token is, and the admins' changes.

The routes call server/auth/admin.py, as the ``silo token`` and ``silo user``
commands do. A change made here is forgotten by this process's token cache at
once; other processes see it within SILO_TOKEN_CACHE_SECONDS.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from sqlalchemy.orm import Session

from server.api.deps import SessionDep, UserDep, require_admin
from server.api.errors import ApiError, documented
from server.api.routing import ApiRoute
from server.auth import admin
from silo_contract.accounts import (
    AuditPage,
    MeOut,
    TokenCreate,
    TokenCreated,
    TokenList,
    TokenOut,
    UserList,
    UserOut,
    UserUpdate,
)
from silo_contract.fields import MAX_ID, USER_NAME_LENGTH

router = APIRouter(
    prefix="/v1", tags=["administration"], route_class=ApiRoute, responses=documented(401)
)

UserName = Annotated[str, Path(max_length=USER_NAME_LENGTH)]


@contextmanager
def _answering(session: Session) -> Iterator[None]:
    """An AdminError as the API's error: 404 not found, 409 last admin, 422 otherwise."""
    try:
        yield
    except admin.AdminError as exc:
        session.rollback()
        if isinstance(exc, admin.NotFoundError):
            raise ApiError(404, "not_found", str(exc)) from None
        if isinstance(exc, admin.LastAdminError):
            raise ApiError(409, "last_admin", str(exc)) from None
        raise ApiError(422, "invalid_request", str(exc)) from None


def _committed(request: Request, session: Session) -> None:
    """Commit an administrative change and drop this process's cached callers."""
    session.commit()
    request.app.state.token_cache.clear()


@router.get("/me", response_model=MeOut)
def me(user: UserDep) -> MeOut:
    """Who the calling token belongs to."""
    return MeOut(
        name=user.name,
        admin=user.is_admin,
        token_id=user.token_id,
        token_prefix=user.token_prefix,
        expires_at=user.expires_at,
    )


@router.get("/tokens", response_model=TokenList, responses=documented(403, 404))
def list_tokens(
    session: SessionDep,
    user: UserDep,
    owner: Annotated[
        str | None, Query(alias="user", min_length=1, max_length=USER_NAME_LENGTH)
    ] = None,
    include_all: Annotated[
        bool, Query(alias="all", description="Revoked and expired tokens too")
    ] = False,
) -> TokenList:
    """An admin: every user's tokens, or ``?user=``'s; anyone else: their own."""
    if not user.is_admin:
        if owner not in (None, user.name):
            require_admin(user, "list another user's tokens")
        owner = user.name
    with _answering(session):
        return TokenList(items=admin.list_tokens(session, user=owner, include_inactive=include_all))


@router.post("/tokens", status_code=201, response_model=TokenCreated, responses=documented(403))
def create_token(
    body: TokenCreate, request: Request, session: SessionDep, user: UserDep
) -> TokenCreated:
    """Admins only: a new token for a user (created if new); the token is in this
    answer only."""
    require_admin(user, "create tokens")
    expires = body.expires_in_seconds
    with _answering(session):
        created = admin.create_token(
            session,
            body.user,
            actor=admin.api_actor(user.name),
            admin=body.admin,
            expires_in=timedelta(seconds=expires) if expires is not None else None,
        )
    _committed(request, session)
    return created


@router.post("/tokens/{token_id}/revoke", response_model=TokenOut)
def revoke_token(
    token_id: Annotated[int, Path(ge=1, le=MAX_ID)],
    request: Request,
    session: SessionDep,
    user: UserDep,
) -> TokenOut:
    """Revoke a token: an admin any, a user their own (another's is "no such token").
    Revoking a revoked token changes nothing."""
    with _answering(session):
        token, changed = admin.revoke_token(
            session,
            token_id,
            actor=admin.api_actor(user.name),
            owner_id=None if user.is_admin else user.id,
        )
    if changed:
        _committed(request, session)
    return token


@router.get("/users", response_model=UserList, responses=documented(403))
def list_users(session: SessionDep, user: UserDep) -> UserList:
    """Admins only: every user, with their flags and how many tokens still work."""
    require_admin(user, "list users")
    return UserList(items=admin.list_users(session))


@router.patch("/users/{name}", response_model=UserOut, responses=documented(403, 409))
def update_user(
    name: UserName, body: UserUpdate, request: Request, session: SessionDep, user: UserDep
) -> UserOut:
    """Admins only: (de)activate, promote or demote a user. 409 for a change that
    would leave no active admin."""
    require_admin(user, "change users")
    actor = admin.api_actor(user.name)
    changed = False
    with _answering(session):
        if body.active is not None:
            changed |= admin.set_active(session, name, body.active, actor=actor)[1]
        if body.admin is not None:
            changed |= admin.set_admin(session, name, body.admin, actor=actor)[1]
        out = admin.user_out(session, admin.find_user(session, name))
    if changed:
        _committed(request, session)
    return out


@router.get("/audit", response_model=AuditPage, responses=documented(403))
def audit(
    session: SessionDep,
    user: UserDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    before: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
) -> AuditPage:
    """Admins only: administrative changes, newest first; follow ``next_before``."""
    require_admin(user, "read the audit log")
    items, next_before = admin.audit_page(session, limit=limit, before=before)
    return AuditPage(items=items, next_before=next_before)
