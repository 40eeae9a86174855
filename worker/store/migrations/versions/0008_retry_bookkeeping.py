"""Retry bookkeeping: whether a create may have gone through unanswered, attempts without progress, the vendor's
id for what an outbox row made, and which escalation step sent a staff text or call (docs/idempotency.md).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 12:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("fruitless", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("progressed_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("unanswered", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("unanswered_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("provider_ref", sa.String(length=64), nullable=True))
    with op.batch_alter_table("staff_alerts") as batch:
        batch.add_column(sa.Column("escalation_step", sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("staff_alerts") as batch:
        batch.drop_column("escalation_step")
    with op.batch_alter_table("outbox") as batch:
        for column in ("provider_ref", "unanswered_at", "unanswered", "progressed_at", "fruitless"):
            batch.drop_column(column)
