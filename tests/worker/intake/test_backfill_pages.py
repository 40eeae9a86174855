from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from config.settings import Settings
from tests.conftest import make_entry
from tests.fakes.gravityforms import InMemoryGravityForms
from worker.intake import backfill
from worker.intake.entries import store_entry
from worker.store.db import new_session
from worker.store.models import BackfillRun, Submission, SubmissionSource

SINCE = datetime(2026, 6, 1, tzinfo=UTC)


def june(day: int) -> str:
    return f"2026-06-{day:02d} 10:00:00"


def test_a_page_is_stored_with_what_was_seen_before_and_what_is_not_an_entry_told_apart(
    settings: Settings, session: Session, form_object: dict[str, Any]
) -> None:
    store_entry(session, site=settings.site, entry=make_entry(2, date_created=june(2)), source=SubmissionSource.POLL)
    session.commit()
    entries = [make_entry(1, date_created=june(1)), make_entry(2, date_created=june(2)),
               {"id": "x", "form_id": "1"}, make_entry(4, date_created="2026-05-30 10:00:00")]
    run = backfill.start(session, site=settings.site, form_id="1", since=SINCE)

    page = backfill.import_page(session, run, InMemoryGravityForms(form_object, entries))

    assert (len(page.stored_ids), page.already_seen, page.skipped, page.finished) == (1, 1, 2, True)
    assert session.scalar(select(func.count()).select_from(Submission)) == 2


def test_a_page_that_fails_to_store_leaves_none_of_its_entries_and_is_read_again_on_resume(
    settings: Settings, session: Session, form_object: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    entries = [make_entry(number, date_created=june(number)) for number in (1, 2, 3)]
    run = backfill.start(session, site=settings.site, form_id="1", since=SINCE)
    real_store = backfill.store_entries

    def store_then_fail(*args: Any, **kwargs: Any) -> Any:
        real_store(*args, **kwargs)
        raise ConnectionError("the database went away")

    monkeypatch.setattr(backfill, "store_entries", store_then_fail)
    with pytest.raises(ConnectionError):
        backfill.import_page(session, run, InMemoryGravityForms(form_object, entries))
    session.rollback()

    with new_session() as fresh:
        assert fresh.scalar(select(func.count()).select_from(Submission)) == 0
        assert fresh.scalars(select(BackfillRun)).one().next_page == 1
