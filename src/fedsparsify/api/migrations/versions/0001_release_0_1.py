"""The schema of release 0.1, exactly as it wrote it.

Written out table by table (never from the models, which move on): a database made by 0.1's
``create_all`` is this revision, ``clients.last_seen_at`` included (0.1 added that column to
older databases with ``ALTER TABLE``).

Revision ID: 0001
Revises:
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "server_secrets",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("value_hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "federations",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("enrollment_token_hash", sa.String(64), nullable=False),
        sa.Column("dealer_id", sa.String(32), nullable=True),
        sa.Column("context_digest", sa.String(64), nullable=True),
        sa.Column("context_bytes", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("finished_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_federations_enrollment_token_hash",
        "federations",
        ["enrollment_token_hash"],
        unique=True,
    )
    op.create_table(
        "clients",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("federation_id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("public_key", sa.LargeBinary(), nullable=False),
        sa.Column("fingerprint", sa.String(128), nullable=False),
        sa.Column("num_samples", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("is_dealer", sa.Boolean(), nullable=False),
        sa.Column("envelope_bytes", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("last_seen_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("federation_id", "name", name="uq_client_name"),
        sa.ForeignKeyConstraint(["federation_id"], ["federations.id"]),
    )
    op.create_index("ix_clients_federation_id", "clients", ["federation_id"])
    op.create_index("ix_clients_token_hash", "clients", ["token_hash"], unique=True)
    op.create_table(
        "rounds",
        sa.Column("id", sa.Integer(), nullable=False, autoincrement=True),
        sa.Column("federation_id", sa.String(32), nullable=False),
        sa.Column("round_index", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("participants", sa.JSON(), nullable=False),
        sa.Column("total_samples", sa.Integer(), nullable=False),
        sa.Column("quorum", sa.Integer(), nullable=False),
        sa.Column("channels", sa.JSON(), nullable=False),
        sa.Column("deadline", sa.Float(), nullable=False),
        sa.Column("opened_at", sa.Float(), nullable=False),
        sa.Column("closed_at", sa.Float(), nullable=True),
        sa.Column("context_digest", sa.String(64), nullable=True),
        sa.Column("mask_digest", sa.String(256), nullable=True),
        sa.Column("value_count", sa.Integer(), nullable=True),
        sa.Column("aggregation_s", sa.Float(), nullable=False),
        sa.Column("contributors", sa.JSON(), nullable=True),
        sa.Column("aggregate_bytes", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("federation_id", "round_index", name="uq_round_index"),
        sa.ForeignKeyConstraint(["federation_id"], ["federations.id"]),
    )
    op.create_index("ix_rounds_federation_id", "rounds", ["federation_id"])
    op.create_table(
        "uploads",
        sa.Column("id", sa.Integer(), nullable=False, autoincrement=True),
        sa.Column("round_id", sa.Integer(), nullable=False),
        sa.Column("client_id", sa.String(32), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("bytes", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("weight", sa.Float(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("round_id", "client_id", "channel", name="uq_upload_once"),
        sa.ForeignKeyConstraint(["round_id"], ["rounds.id"]),
    )
    op.create_index("ix_uploads_round_id", "uploads", ["round_id"])
    op.create_table(
        "round_metrics",
        sa.Column("id", sa.Integer(), nullable=False, autoincrement=True),
        sa.Column("round_id", sa.Integer(), nullable=False),
        sa.Column("client_id", sa.String(32), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("round_id", "client_id", name="uq_metric_client"),
        sa.ForeignKeyConstraint(["round_id"], ["rounds.id"]),
    )
    op.create_index("ix_round_metrics_round_id", "round_metrics", ["round_id"])


def downgrade() -> None:
    for table in ("round_metrics", "uploads", "rounds", "clients", "federations"):
        op.drop_table(table)
    op.drop_table("server_secrets")
