"""Sweep membership: `sweep_runs(sweep_id, run_id)`, one row per run of each sweep, so a run
that a later sweep reuses or skips belongs to that sweep too. `runs.sweep_id` stays as the
sweep that created the run; the membership starts as exactly those pairs.

Revision ID: 0005
Revises: 0004
Created: 2026-12-05 20:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sweep_runs",
        sa.Column("sweep_id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["sweep_id"], ["sweeps.id"]),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"]),
        sa.PrimaryKeyConstraint("sweep_id", "run_id"),
    )
    op.create_index("ix_sweep_runs_run_id", "sweep_runs", ["run_id"], unique=False)
    op.execute(
        "INSERT INTO sweep_runs (sweep_id, run_id)"
        " SELECT sweep_id, id FROM runs WHERE sweep_id IS NOT NULL"
    )


def downgrade() -> None:
    op.drop_index("ix_sweep_runs_run_id", table_name="sweep_runs")
    op.drop_table("sweep_runs")
