"""job resources: the CPUs, GPUs and memory a job asks of the cluster

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 21:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("cpus", sa.Float(), nullable=False, server_default="1"))
        batch_op.add_column(sa.Column("gpus", sa.Float(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("memory_gb", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("memory_gb")
        batch_op.drop_column("gpus")
        batch_op.drop_column("cpus")
