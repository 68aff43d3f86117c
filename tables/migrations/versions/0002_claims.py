"""Claims: who sent each delivery_log row, and in-doubt resends per delivery.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-07

``delivery_log.claimed_by`` is the runner that won the row by compare-and-set
just before sending it (first send or retry); an outcome is written only by
the runner that holds the claim. ``delivery.resent_in_doubt`` counts retries of
sends that may already have been delivered (a connection lost in flight).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("delivery_log") as batch:
        batch.add_column(sa.Column("claimed_by", sa.String(32), nullable=True))
    with op.batch_alter_table("delivery") as batch:
        batch.add_column(sa.Column("resent_in_doubt", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("delivery") as batch:
        batch.drop_column("resent_in_doubt")
    with op.batch_alter_table("delivery_log") as batch:
        batch.drop_column("claimed_by")
