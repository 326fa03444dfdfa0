"""cluster capacity: the Ray cluster's node sizes as a dispatcher last measured them

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "cluster_capacity",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("nodes", sa.Integer(), nullable=False),
        sa.Column("largest_cpus", sa.Float(), nullable=False),
        sa.Column("largest_gpus", sa.Float(), nullable=False),
        sa.Column("largest_memory_gb", sa.Float(), nullable=False),
        sa.Column("total_cpus", sa.Float(), nullable=False),
        sa.Column("total_gpus", sa.Float(), nullable=False),
        sa.Column("total_memory_gb", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    op.drop_table("cluster_capacity")
