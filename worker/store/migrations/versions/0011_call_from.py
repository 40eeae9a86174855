"""From when each submission's person asked to be called, read once at processing, so the staff alert's reminder
and the CRM task's due time do not read the entry through its form again.

No PHI added: a time, beside the submission's other times.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 10:40:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("submissions") as batch:
        batch.add_column(sa.Column("call_from", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("submissions") as batch:
        batch.drop_column("call_from")
