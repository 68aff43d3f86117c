"""Delivery: the shard layout of a delivery prepared for many workers.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26

``prepare`` (push.shards) analyses a delivery without sending it and then
records how many notifications it holds (``prepared_count``, seqs
``0 .. prepared_count - 1``), when (``prepared_at``) and the seq range of one
shard (``shard_size``). Workers read these to find a shard's rows; a delivery
sent by ``send_batch`` leaves them NULL. Nullable columns only, no backfill.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("delivery", sa.Column("shard_size", sa.Integer(), nullable=True))
    op.add_column("delivery", sa.Column("prepared_count", sa.Integer(), nullable=True))
    op.add_column("delivery", sa.Column("prepared_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("delivery") as batch:  # SQLite drops columns by copying the table
        for name in ("prepared_at", "prepared_count", "shard_size"):
            batch.drop_column(name)
