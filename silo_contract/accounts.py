"""Administration's bodies: tokens, users, the audit log, the caller."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from silo_contract.fields import (
    MAX_TOKEN_LIFETIME_SECONDS,
    Integral,
    Strictly,
    Timestamp,
    UserName,
)

TokenState = Literal["active", "expired", "revoked"]


class TokenOut(BaseModel):
    """A user's API token as administration sees it: never the token itself."""

    id: int
    user: str
    prefix: str = Field(description="The token's first characters, to recognise it by")
    created_at: Timestamp
    expires_at: Timestamp | None = Field(description="Null: the token does not expire")
    state: TokenState
    revoked_at: Timestamp | None
    revoked_by: str | None = Field(description="Who revoked it (`user:NAME`, `local:UNIX-USER`)")


class TokenList(BaseModel):
    items: list[TokenOut]


class TokenCreate(BaseModel):
    """A new token for ``user`` (created if new; ``admin`` makes them an admin)."""

    model_config = ConfigDict(extra="forbid")

    user: UserName
    admin: StrictBool = False
    expires_in_seconds: (
        Annotated[int, Strictly, Field(ge=60, le=MAX_TOKEN_LIFETIME_SECONDS), Integral] | None
    ) = Field(None, description="Null: no expiry")


class TokenCreated(TokenOut):
    token: str = Field(description="The bearer token; shown this once, only its hash is kept")


class UserOut(BaseModel):
    name: str
    admin: bool
    active: bool
    created_at: Timestamp
    active_tokens: int = Field(description="Tokens neither revoked nor expired")


class UserList(BaseModel):
    items: list[UserOut]


class UserUpdate(BaseModel):
    """What to change of a user; a field left out stays as it is."""

    model_config = ConfigDict(extra="forbid")

    active: StrictBool | None = Field(None, description="False: every token of the user is refused")
    admin: StrictBool | None = None


class MeOut(BaseModel):
    """Who the calling token belongs to."""

    name: str
    admin: bool
    token_id: int
    token_prefix: str
    expires_at: Timestamp | None


class AuditEventOut(BaseModel):
    id: int
    at: Timestamp
    actor: str
    action: str = Field(description="token.create, token.revoke, user.create, user.deactivate, ...")
    target: str = Field(description="`token:ID` or `user:NAME`")
    details: dict[str, Any]


class AuditPage(BaseModel):
    items: list[AuditEventOut]
    next_before: int | None = Field(None, description="Pass as ?before= for older events")
