"""job plans: the spec's names and planned cycles and epochs, stored with the job

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 10:00:00

Existing jobs get their plan from their stored spec, read with the spec parser
of the code that runs the upgrade; a spec it cannot read (a plug-in that is not
installed, a field this version no longer knows) leaves the job's plan NULL,
as the API showed it before.
"""

import json
import logging
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Never recreate jobs on SQLite (batch mode's copy-and-move): with foreign keys
# on, dropping the old table would delete every job's tags, events, cycles and
# artifacts (ON DELETE CASCADE). ADD and DROP COLUMN change it in place.
IN_PLACE = "never"
NAME_LENGTH = 64
BATCH = 500
PLAN = ("model", "dataset", "schedule", "planned_cycles", "dense_epochs", "epochs_per_cycle")
NO_PLAN = dict.fromkeys(PLAN)

log = logging.getLogger("alembic.runtime.migration")

jobs = sa.table(
    "jobs",
    sa.column("id", sa.Integer),
    sa.column("spec", sa.JSON),
    *(sa.column(name) for name in PLAN),
)


def _plan(spec: Any) -> dict[str, Any]:
    """The plan columns of a stored spec; NO_PLAN if this code cannot read it."""
    from silo_core.spec import SpecError, parse_spec

    try:
        parsed = parse_spec(spec)
        plan = {
            "model": parsed.model.name,
            "dataset": parsed.dataset.name,
            "schedule": parsed.schedule.name,
            "planned_cycles": parsed.pruning.planned_cycles(),
            "dense_epochs": parsed.training.dense_epochs,
            "epochs_per_cycle": parsed.training.epochs_per_cycle,
        }
    except SpecError:
        return NO_PLAN
    except Exception:  # a spec this version cannot plan must not stop the upgrade
        log.exception("cannot plan a stored spec; its job keeps no plan")
        return NO_PLAN
    if any(len(plan[name]) > NAME_LENGTH for name in ("model", "dataset", "schedule")):
        return NO_PLAN
    return plan


def _fill_plans(connection: sa.Connection) -> None:
    """Plan every job from its spec, BATCH jobs at a time in id order; a spec
    that comes more than once in a batch is parsed once."""
    write = jobs.update().where(jobs.c.id == sa.bindparam("job_id"))  # SETs the plan's keys
    last = None
    while True:
        query = sa.select(jobs.c.id, jobs.c.spec).order_by(jobs.c.id)
        if last is not None:
            query = query.where(jobs.c.id > last)
        rows = connection.execute(query.limit(BATCH)).all()
        if not rows:
            return
        plans: dict[str, dict[str, Any]] = {}
        updates = []
        for job_id, spec in rows:
            key = json.dumps(spec, sort_keys=True)
            if key not in plans:
                plans[key] = _plan(spec)
            if plans[key] is not NO_PLAN:
                updates.append({"job_id": job_id, **plans[key]})
        if updates:
            connection.execute(write, updates)
        last = rows[-1].id


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None, recreate=IN_PLACE) as batch_op:
        for name in ("model", "dataset", "schedule"):
            batch_op.add_column(sa.Column(name, sa.String(length=NAME_LENGTH), nullable=True))
        for name in ("planned_cycles", "dense_epochs", "epochs_per_cycle"):
            batch_op.add_column(sa.Column(name, sa.Integer(), nullable=True))
    _fill_plans(op.get_bind())


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None, recreate=IN_PLACE) as batch_op:
        for name in reversed(PLAN):
            batch_op.drop_column(name)
