"""Federations carry the version of their stored spec; metric samples per aggregator process.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Every spec stored before this revision is in the format of release 0.1: version 1.
    op.add_column(
        "federations",
        sa.Column("spec_version", sa.Integer(), nullable=False, server_default="1"),
    )
    op.create_table(
        "metric_samples",
        sa.Column("instance", sa.String(96), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("labels", sa.String(512), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("instance", "name", "labels"),
    )


def downgrade() -> None:
    op.drop_table("metric_samples")
    with op.batch_alter_table("federations") as batch:
        batch.drop_column("spec_version")
