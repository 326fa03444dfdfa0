"""Who may read what: the deployment's read policy (``SILO_READ_ACCESS``).

``team`` (the default): every user reads every job, study, log, event and
artifact; changing a job stays its owner's or an admin's. ``owner``: a user
reads only their own; another user's job or study is answered 404 exactly as
a missing one is, so ids reveal nothing, and lists hold only one's own.
Admins read everything under both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from server.api.deps import UserDep
from server.auth.tokens import Caller


@dataclass(frozen=True)
class Reader:
    """The caller, with what the policy lets them read."""

    user: Caller
    only_owner: int | None  # read only this owner's resources; None: everything

    def may_read(self, owner_id: int) -> bool:
        return self.only_owner is None or self.only_owner == owner_id


def reader_for(user: Caller, policy: str) -> Reader:
    owner_only = policy == "owner" and not user.is_admin
    return Reader(user, user.id if owner_only else None)


async def current_reader(request: Request, user: UserDep) -> Reader:
    return reader_for(user, request.app.state.settings.read_access)


ReaderDep = Annotated[Reader, Depends(current_reader)]
