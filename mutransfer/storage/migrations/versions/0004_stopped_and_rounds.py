"""Trials stopped early by a scheduler (status `stopped`); the search round that planned a trial (refine rounds).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TRIAL_STATUSES = "status IN ('pending', 'running', 'completed', 'diverged', 'failed', 'stopped')"
TRIAL_STATUSES_0001 = "status IN ('pending', 'running', 'completed', 'diverged', 'failed')"


def upgrade() -> None:
    # Existing trials were planned by their recipe's own draws: round 0, the server default.
    with op.batch_alter_table("trials", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_trials_status"), type_="check")
        batch_op.create_check_constraint("status", TRIAL_STATUSES)
        batch_op.add_column(sa.Column("round", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    # A stopped trial has no status before 0004: it becomes a failed one, with its curve, and says why.
    op.execute("UPDATE trials SET status = 'failed', error = 'stopped early (a status this schema does not know)' "
               "WHERE status = 'stopped'")
    with op.batch_alter_table("trials", schema=None) as batch_op:
        batch_op.drop_column("round")
        batch_op.drop_constraint(op.f("ck_trials_status"), type_="check")
        batch_op.create_check_constraint("status", TRIAL_STATUSES_0001)
