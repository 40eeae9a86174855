"""Poll cursors, backfill runs, screening release, device evidence, lead consent and priority.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 04:28:21.108141
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
        "backfill_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("site", sa.String(length=64), nullable=False),
        sa.Column("form_id", sa.String(length=32), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("next_page", sa.Integer(), nullable=False),
        sa.Column("imported", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("site", "form_id", "since", name="uq_backfill_site_form_since"),
    )
    op.create_table(
        "poll_cursors",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("site", sa.String(length=64), nullable=False),
        sa.Column("form_id", sa.String(length=32), nullable=False),
        sa.Column("cursor", sa.DateTime(timezone=True), nullable=True),
        sa.Column("next_poll_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_polled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_success_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("consecutive_failures", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("entries_seen", sa.Integer(), nullable=False),
        sa.Column("entries_new", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("site", "form_id", name="uq_poll_cursor_site_form"),
    )
    with op.batch_alter_table("leads", schema=None) as batch_op:
        batch_op.add_column(sa.Column("consent", sa.Boolean(), nullable=True))
        batch_op.add_column(sa.Column("known_first_names", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("merged_into_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key("fk_leads_merged_into", "leads", ["merged_into_id"], ["id"])
        batch_op.add_column(sa.Column("priority", sa.String(length=8), nullable=False, server_default="normal"))

    with op.batch_alter_table("submissions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("device_index", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("requested_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("released", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.create_index(batch_op.f("ix_submissions_device_index"), ["device_index"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("submissions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_submissions_device_index"))
        batch_op.drop_column("released")
        batch_op.drop_column("requested_at")
        batch_op.drop_column("device_index")

    with op.batch_alter_table("leads", schema=None) as batch_op:
        batch_op.drop_column("priority")
        batch_op.drop_constraint("fk_leads_merged_into", type_="foreignkey")
        batch_op.drop_column("merged_into_id")
        batch_op.drop_column("known_first_names")
        batch_op.drop_column("consent")

    op.drop_table("poll_cursors")
    op.drop_table("backfill_runs")
