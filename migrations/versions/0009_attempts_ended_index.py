"""attempts by end time: an index on job_attempts.ended_at

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05 00:00:00

The dispatcher's fair share reads the attempts running or ended inside its
window (server/jobs/usage.py) on every tick that can launch; without this
index PostgreSQL scanned every attempt ever made (bench/dispatch_tick.py).
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_job_attempts_ended_at", "job_attempts", ["ended_at"])


def downgrade() -> None:
    op.drop_index("ix_job_attempts_ended_at", table_name="job_attempts")
