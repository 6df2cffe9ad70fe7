"""A covering index on metric summaries by key, for comparisons over many runs.

Revision ID: 0003
Revises: 0002
Created: 2026-12-05 17:00:00
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("metric_summaries", schema=None) as batch_op:
        batch_op.create_index(
            "ix_metric_summaries_key", ["key", "run_id", "last", "last_kind"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("metric_summaries", schema=None) as batch_op:
        batch_op.drop_index("ix_metric_summaries_key")
