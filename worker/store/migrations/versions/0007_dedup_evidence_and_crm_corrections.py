"""Dedup evidence per submission, leads split by hand, and the CRM corrections merges and splits leave.

No PHI is added: match evidence holds agreement levels, scores and lead references; corrections hold CRM ids.

Revision ID: 0007
Revises: 0005
Create Date: 2026-11-28 09:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "crm_corrections",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("lead_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("other_lead_id", sa.Integer(), nullable=True),
        sa.Column("note_id", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("outcome", sa.String(length=255), nullable=True),
        sa.ForeignKeyConstraint(["lead_id"], ["leads.id"]),
        sa.ForeignKeyConstraint(["other_lead_id"], ["leads.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_crm_corrections_lead_id", "crm_corrections", ["lead_id"], unique=False)
    with op.batch_alter_table("leads", schema=None) as batch_op:
        batch_op.add_column(sa.Column("split_from_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key("fk_leads_split_from", "leads", ["split_from_id"], ["id"])
    with op.batch_alter_table("submissions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("match_evidence", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("submissions", schema=None) as batch_op:
        batch_op.drop_column("match_evidence")
    with op.batch_alter_table("leads", schema=None) as batch_op:
        batch_op.drop_constraint("fk_leads_split_from", type_="foreignkey")
        batch_op.drop_column("split_from_id")
    op.drop_index("ix_crm_corrections_lead_id", table_name="crm_corrections")
    op.drop_table("crm_corrections")
