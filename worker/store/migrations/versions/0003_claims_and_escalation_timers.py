"""Claims (the speed-to-lead record), escalation timers, and staff alerts found by their Twilio id.

No PHI is added: claims and timers hold staff details, lead ids, provider ids and times only.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 09:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "claims",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("lead_id", sa.Integer(), nullable=False),
        sa.Column("staff_id", sa.String(length=32), nullable=False),
        sa.Column("staff_name", sa.String(length=128), nullable=False),
        sa.Column("staff_phone", sa.String(length=20), nullable=False),
        sa.Column("crm_owner_id", sa.String(length=64), nullable=True),
        sa.Column("channel", sa.String(length=8), nullable=False),
        sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("first_alert_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("bridge_call_sid", sa.String(length=64), nullable=True),
        sa.Column("bridge_status", sa.String(length=24), nullable=True),
        sa.Column("bridge_seconds", sa.Integer(), nullable=True),
        sa.Column("bridged_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["lead_id"], ["leads.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("lead_id"),
    )
    op.create_table(
        "escalation_timers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("lead_id", sa.Integer(), nullable=False),
        sa.Column("outbox_id", sa.Integer(), nullable=False),
        sa.Column("purpose", sa.String(length=16), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("callback_attempts", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("leased_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("waiting_sms_sid", sa.String(length=64), nullable=True),
        sa.Column("waiting_call_sid", sa.String(length=64), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["lead_id"], ["leads.id"]),
        sa.ForeignKeyConstraint(["outbox_id"], ["outbox.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("lead_id"),
    )
    op.create_index("ix_escalation_timers_state_due", "escalation_timers", ["state", "due_at"], unique=False)
    op.create_index("ix_staff_alerts_provider_id", "staff_alerts", ["provider_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_staff_alerts_provider_id", table_name="staff_alerts")
    op.drop_index("ix_escalation_timers_state_due", table_name="escalation_timers")
    op.drop_table("escalation_timers")
    op.drop_table("claims")
