"""video jobs

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 18:40:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "video_jobs",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=False),
        sa.Column("client", sa.String(length=64), nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("endpoint", sa.String(length=16), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("model_requested", sa.String(length=200), nullable=True),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("size", sa.String(length=32), nullable=False),
        sa.Column("seconds", sa.String(length=8), nullable=False),
        sa.Column("has_image", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("progress", sa.Integer(), nullable=False),
        sa.Column("upstream_id", sa.String(length=128), nullable=False),
        sa.Column("upstream_account", sa.String(length=32), nullable=True),
        sa.Column("upstream_key", sa.String(length=32), nullable=False),
        sa.Column("error_code", sa.String(length=64), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("video", sa.String(length=64), nullable=True),
        sa.Column("poster", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("next_poll_ms", sa.BigInteger(), nullable=False),
        sa.Column("polls", sa.Integer(), nullable=False),
        sa.Column("lease_owner", sa.String(length=64), nullable=True),
        sa.Column("lease_until_ms", sa.BigInteger(), nullable=False),
        sa.Column("price_micros", sa.BigInteger(), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=True),
        sa.Column("budget_keys", sa.JSON(), nullable=False),
        sa.Column("ipd_key", sa.String(length=128), nullable=True),
        sa.Column("ipd_token", sa.String(length=64), nullable=True),
        sa.Column("settled", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_video_jobs")),
    )
    op.create_index(
        op.f("ix_video_jobs_settled_next_poll_ms"), "video_jobs", ["settled", "next_poll_ms"]
    )
    op.create_index(op.f("ix_video_jobs_owner_created_at"), "video_jobs", ["owner", "created_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_video_jobs_owner_created_at"), table_name="video_jobs")
    op.drop_index(op.f("ix_video_jobs_settled_next_poll_ms"), table_name="video_jobs")
    op.drop_table("video_jobs")
