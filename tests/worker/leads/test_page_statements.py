"""Weighing evidence happens in Python: a page of submissions costs the database as many statements however many
people it holds and however many candidates they have (docs/architecture.md#processing-a-page)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import event, func, select, text
from sqlalchemy.orm import Session

from config.settings import Settings
from tests.conftest import make_entry
from worker.intake.entries import register_form, store_entries
from worker.leads.page_writes import claim
from worker.leads.processing import FormReader, process_submissions
from worker.store.db import session_scope
from worker.store.models import Lead, SubmissionSource


def page(first_id: int, people: int, area: str) -> list[dict[str, Any]]:
    """Each person twice (the second time with a slip in the first name) and a relative on their phone; history
    old enough that no staff alert is considered (as in a backfill, the path docs/benchmarks.md measures)."""
    entries = []
    subnet = {"617": "192.0.2", "212": "198.18.0"}[area]  # every person and relative on a device of their own
    for n in range(people):
        phone, at = f"({area}) 555-{100 + n:04d}", f"2025-03-{1 + n % 20:02d} 10:00:00"
        last = "Okafor" + "abcdefghijklmnop"[n]  # a digit in a name is screened out
        person = {"1.3": "Sarah", "1.6": last, "2": f"sarah.{area}.{n}@example.org", "3": phone, "date_created": at,
                  "ip": f"{subnet}.{n}"}
        slip = {**person, "1.3": "Sauah", "date_created": at[:-8] + "11:00:00"}
        relative = {**person, "1.3": "Morgan", "2": f"morgan.{area}.{n}@example.org", "ip": f"{subnet}.{100 + n}"}
        entries += [make_entry(first_id + 3 * n, **person), make_entry(first_id + 3 * n + 1, **slip),
                    make_entry(first_id + 3 * n + 2, **relative)]
    return entries


def statements_for(session: Session, settings: Settings, entries: list[dict[str, Any]]) -> int:
    stored = store_entries(session, site=settings.site, entries=entries, source=SubmissionSource.BACKFILL)
    session.commit()
    seen: list[str] = []
    listen = lambda *args: seen.append(args[2])  # noqa: E731 (the statement text)
    event.listen(session.get_bind(), "before_cursor_execute", listen)
    try:
        process_submissions(session, [each.submission_id for each in stored], settings)
        session.commit()
    finally:
        event.remove(session.get_bind(), "before_cursor_execute", listen)
    return len(seen)


@pytest.mark.services
def test_a_page_costs_the_same_statements_for_four_people_as_for_sixteen(
    pg_settings: Settings, form_object: dict[str, Any]
) -> None:
    # On PostgreSQL: SQLite inserts row by row, so there the count grows with the page by design.
    with session_scope() as session:
        register_form(session, site=pg_settings.site, form_object=form_object)
        session.commit()
        # A worker reads a form's definition once, into its kept mapping; then only its time, page after page.
        FormReader(session, pg_settings).form(pg_settings.site, str(form_object["id"]))

        small = statements_for(session, pg_settings, page(1, 4, "617"))
        assert session.scalar(select(func.count()).select_from(Lead)) == 8  # Sarah (twice) and Morgan, four times
        large = statements_for(session, pg_settings, page(1000, 16, "212"))

        assert session.scalar(select(func.count()).select_from(Lead)) == 8 + 32
        assert small == large


HISTORY = """
INSERT INTO submissions (site, form_id, entry_id, source, received_at, payload, state, is_repeat)
SELECT 'main', '1', :prefix || n, 'backfill', now(), 'not read', :state, false FROM generate_series(1, :count) AS n
"""


@pytest.mark.services
def test_a_page_is_claimed_by_id_however_long_the_backlog_of_waiting_submissions(
    pg_settings: Settings, form_object: dict[str, Any]
) -> None:
    """Statistics taken while none waited, then a backlog (a backfill stored faster than it is processed, a broker
    outage): claiming a page still reads its own rows, not every waiting submission."""
    with session_scope() as session:
        register_form(session, site=pg_settings.site, form_object=form_object)
        session.execute(text(HISTORY), {"prefix": "done-", "state": "processed", "count": 20_000})
        session.commit()
        session.execute(text("ANALYZE submissions"))
        session.commit()
        session.execute(text(HISTORY), {"prefix": "waiting-", "state": "received", "count": 5_000})
        mine, = store_entries(session, site=pg_settings.site, entries=[make_entry(1)], source=SubmissionSource.BACKFILL)
        session.commit()
        claimed = claim(session, [mine.submission_id])
        read = session.scalar(text("SELECT idx_tup_fetch FROM pg_stat_xact_user_tables WHERE relname = 'submissions'"))
        session.rollback()
    assert [each.id for each in claimed] == [mine.submission_id]
    assert read is not None and read <= 2, f"{read} rows read through an index to claim one submission"
