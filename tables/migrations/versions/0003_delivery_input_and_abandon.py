"""Delivery: fingerprint of the input (refuse a resume with different input) and abandonment.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24

``input_fingerprint`` is the SHA-256 of the first chunk's notifications and
``input_count`` how many the input held when that was known; a resume whose
input differs is refused. ``abandoned_at`` / ``abandoned_reason`` record that
an operator closed an unfinished delivery (its pending rows were excluded).
Nullable columns only, so existing deliveries need no backfill.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("delivery", sa.Column("input_fingerprint", sa.String(64), nullable=True))
    op.add_column("delivery", sa.Column("input_count", sa.Integer(), nullable=True))
    op.add_column("delivery", sa.Column("abandoned_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("delivery", sa.Column("abandoned_reason", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("delivery") as batch:  # SQLite drops columns by copying the table
        for name in ("abandoned_reason", "abandoned_at", "input_count", "input_fingerprint"):
            batch.drop_column(name)
