"""token administration: expiry, revocation by whom, deactivated users, audit events

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# Never recreate users or api_tokens on SQLite (batch mode's copy-and-move): with
# foreign keys on, dropping the old users table would delete every token (ON
# DELETE CASCADE) and fail on the jobs that reference it. Plain ALTER TABLE ADD
# and DROP COLUMN (SQLite 3.35+) change the tables in place.
IN_PLACE = "never"


def upgrade() -> None:
    # Existing users stay active; existing tokens never expire and keep working.
    # The default is the string '1': true for PostgreSQL's boolean and for SQLite,
    # and a constant, which SQLite's ADD COLUMN needs.
    with op.batch_alter_table("users", schema=None, recreate=IN_PLACE) as batch_op:
        batch_op.add_column(
            sa.Column("is_active", sa.Boolean(), nullable=False, server_default="1")
        )
    with op.batch_alter_table("api_tokens", schema=None, recreate=IN_PLACE) as batch_op:
        batch_op.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("revoked_by", sa.String(length=128), nullable=True))
    op.create_table(
        "audit_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("target", sa.String(length=128), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.create_index("ix_audit_events_action", ["action"], unique=False)
        batch_op.create_index("ix_audit_events_target", ["target"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_events_target")
        batch_op.drop_index("ix_audit_events_action")
    op.drop_table("audit_events")
    with op.batch_alter_table("api_tokens", schema=None, recreate=IN_PLACE) as batch_op:
        batch_op.drop_column("revoked_by")
        batch_op.drop_column("expires_at")
    with op.batch_alter_table("users", schema=None, recreate=IN_PLACE) as batch_op:
        batch_op.drop_column("is_active")
