"""studies: one base spec times schedules times seeds; jobs know their dense training

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 22:05:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "studies",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("owner_id", BIG_ID, nullable=False),
        sa.Column("base_spec", sa.JSON(), nullable=False),
        sa.Column("schedules", sa.JSON(), nullable=False),
        sa.Column("seeds", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["owner_id"], ["users.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("study_id", BIG_ID, nullable=True))
        batch_op.add_column(sa.Column("study_label", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("dense_identity", sa.String(length=64), nullable=True))
        batch_op.create_foreign_key(
            "fk_jobs_study", "studies", ["study_id"], ["id"], ondelete="CASCADE"
        )
        batch_op.create_index("ix_jobs_study_id", ["study_id"], unique=False)
        batch_op.create_index("ix_jobs_dense_identity", ["dense_identity"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_dense_identity")
        batch_op.drop_index("ix_jobs_study_id")
        batch_op.drop_constraint("fk_jobs_study", type_="foreignkey")
        batch_op.drop_column("dense_identity")
        batch_op.drop_column("study_label")
        batch_op.drop_column("study_id")
    op.drop_table("studies")
