"""Trust (issue 11): members' signing and mask keys and removal, round attempts, participant-set
digests and weights, join-code policy. Every column is nullable: rows of release 0.1 read NULL
(no keys, attempt 0, no limits, never revoked), as the code expects.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

COLUMNS: tuple[tuple[str, sa.Column[object]], ...] = (
    ("clients", sa.Column("signing_key", sa.LargeBinary(), nullable=True)),
    ("clients", sa.Column("mask_key", sa.LargeBinary(), nullable=True)),
    ("clients", sa.Column("removed_at", sa.Float(), nullable=True)),
    ("rounds", sa.Column("attempt", sa.Integer(), nullable=True)),
    ("rounds", sa.Column("participants_digest", sa.String(64), nullable=True)),
    ("rounds", sa.Column("weights", sa.JSON(), nullable=True)),
    ("federations", sa.Column("enrollment_expires_at", sa.Float(), nullable=True)),
    ("federations", sa.Column("enrollment_max_uses", sa.Integer(), nullable=True)),
    ("federations", sa.Column("enrollment_uses", sa.Integer(), nullable=True)),
    ("federations", sa.Column("enrollment_revoked_at", sa.Float(), nullable=True)),
)


def upgrade() -> None:
    for table, column in COLUMNS:
        op.add_column(table, column)


def downgrade() -> None:
    for table, column in reversed(COLUMNS):
        with op.batch_alter_table(table) as batch:
            batch.drop_column(column.name)
