"""Leases that follow the worker's life: a row per live worker, and when each submission and outbox row was last
handed to the broker, so the sweeper offers stored work again at most once per stale period.

No PHI added.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 17:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "live_workers",
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("alive_until", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    # SQLite adds no column with a default of now() in place: it copies the table instead.
    sqlite = op.get_bind().dialect.name == "sqlite"
    for table in ("submissions", "outbox"):
        with op.batch_alter_table(table, recreate="always" if sqlite else "auto") as batch:
            batch.add_column(sa.Column("offered_at", sa.DateTime(timezone=True), nullable=False,
                                       server_default=sa.func.now()))
    where = sa.text("state = 'received'")
    op.create_index("ix_submissions_received_offered", "submissions", ["offered_at"], unique=False,
                    postgresql_where=where, sqlite_where=where)


def downgrade() -> None:
    op.drop_index("ix_submissions_received_offered", table_name="submissions")
    for table in ("outbox", "submissions"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("offered_at")
    op.drop_table("live_workers")
