"""The 855 line as a door: inbound calls (their state in the call flow, their voicemail at Twilio), and
submissions whose entry id is a Twilio CallSid or MessageSid (34 characters, so the column is widened).

PHI added: the caller's number, the voicemail's address and its transcription, encrypted like every PHI column.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # SQLite does not enforce a VARCHAR length: only PostgreSQL needs the wider column.
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column("submissions", "entry_id", type_=sa.String(length=64), existing_type=sa.String(length=32),
                        existing_nullable=False)
    op.create_table(
        "phone_calls",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("call_sid", sa.String(length=64), nullable=False),
        sa.Column("site", sa.String(length=64), nullable=False),
        sa.Column("caller", sa.Text(), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=True),
        sa.Column("ring_order", sa.String(length=16), nullable=False),
        sa.Column("ring_step", sa.Integer(), nullable=False),
        sa.Column("staff_ids", sa.JSON(), nullable=False),
        sa.Column("answered_by", sa.String(length=32), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("voicemail_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recording_sid", sa.String(length=64), nullable=True),
        sa.Column("recording_url", sa.Text(), nullable=True),
        sa.Column("recording_seconds", sa.Integer(), nullable=True),
        sa.Column("transcription", sa.Text(), nullable=True),
        sa.Column("transcription_status", sa.String(length=16), nullable=True),
        sa.Column("submission_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["submission_id"], ["submissions.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("call_sid"),
    )
    op.create_index("ix_phone_calls_state_updated", "phone_calls", ["state", "updated_at"], unique=False)
    op.create_index("ix_phone_calls_submission_id", "phone_calls", ["submission_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_phone_calls_submission_id", table_name="phone_calls")
    op.drop_index("ix_phone_calls_state_updated", table_name="phone_calls")
    op.drop_table("phone_calls")
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column("submissions", "entry_id", type_=sa.String(length=32), existing_type=sa.String(length=64),
                        existing_nullable=False)
