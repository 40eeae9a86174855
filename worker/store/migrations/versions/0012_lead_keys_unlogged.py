"""Dedup's lock rows (`lead_keys`) kept out of PostgreSQL's write-ahead log.

A lock row holds nothing but its key: it exists to be locked. Each new key lands on a random page of the table's
index, and the first change to a page after a checkpoint writes the whole page to the log, so at a million leads
these rows were the largest share of a backfill's writes. Unlogged, PostgreSQL empties the table after a crash (and
a promoted standby starts with it empty); dedup inserts a key before it locks it, as it does for a key never seen,
so an emptied table only means keys inserted again. SQLite has no such tables: nothing changes there.

No PHI added.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03 18:30:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE lead_keys SET UNLOGGED")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE lead_keys SET LOGGED")
