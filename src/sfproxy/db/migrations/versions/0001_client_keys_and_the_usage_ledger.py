"""client keys and the usage ledger

Revision ID: 0001
Revises:
Create Date: 2026-12-01 15:16:32.947120
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
        "client_keys",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("rpm", sa.Integer(), nullable=True),
        sa.Column("images_per_day", sa.Integer(), nullable=True),
        sa.Column("daily_budget", sa.Numeric(precision=18, scale=6), nullable=True),
        sa.Column("monthly_budget", sa.Numeric(precision=18, scale=6), nullable=True),
        sa.Column("models", sa.JSON(), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_client_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_client_keys_key_hash")),
        sa.UniqueConstraint("name", name=op.f("uq_client_keys_name")),
    )
    op.create_table(
        "ledger",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("client", sa.String(length=64), nullable=False),
        sa.Column("endpoint", sa.String(length=64), nullable=False),
        sa.Column("model_requested", sa.String(length=200), nullable=True),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("images_requested", sa.Integer(), nullable=False),
        sa.Column("images_made", sa.Integer(), nullable=False),
        sa.Column("images_delivered", sa.Integer(), nullable=False),
        sa.Column("images_refunded", sa.Integer(), nullable=False),
        sa.Column("size", sa.String(length=32), nullable=True),
        sa.Column("upstream_account", sa.String(length=32), nullable=True),
        sa.Column("upstream_ms", sa.Integer(), nullable=True),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("cost", sa.Numeric(precision=18, scale=6), nullable=True),
        sa.Column("charged", sa.Numeric(precision=18, scale=6), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger")),
    )
    op.create_index(op.f("ix_ledger_at"), "ledger", ["at"])
    op.create_index(op.f("ix_ledger_client_at"), "ledger", ["client", "at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_ledger_client_at"), table_name="ledger")
    op.drop_index(op.f("ix_ledger_at"), table_name="ledger")
    op.drop_table("ledger")
    op.drop_table("client_keys")
