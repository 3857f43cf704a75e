"""Sample counts and byte counts as 64-bit integers on PostgreSQL (a site may declare up to 2^40
samples; an upload may be larger than 2 GiB with a raised limit). SQLite's INTEGER already holds
64 bits: nothing changes there.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

COLUMNS = (("clients", "num_samples"), ("rounds", "total_samples"), ("uploads", "bytes"))


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, column in COLUMNS:
        op.alter_column(
            table, column, type_=sa.BigInteger(), existing_type=sa.Integer(), nullable=False
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, column in COLUMNS:
        op.alter_column(
            table, column, type_=sa.Integer(), existing_type=sa.BigInteger(), nullable=False
        )
