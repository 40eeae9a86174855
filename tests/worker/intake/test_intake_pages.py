from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from config.settings import Settings
from tests.conftest import make_entry
from worker.intake.entries import RejectedEntry, store_entries, store_entry
from worker.store.models import Submission, SubmissionSource


def stored_count(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(Submission)) or 0


def test_a_page_of_entries_is_stored_in_its_order_and_an_entry_seen_before_is_not_stored_again(
    settings: Settings, session: Session
) -> None:
    earlier = store_entry(session, site=settings.site, entry=make_entry(2), source=SubmissionSource.WEBHOOK)
    session.commit()

    page = store_entries(session, site=settings.site, entries=[make_entry(1), make_entry(2), make_entry(3)],
                         source=SubmissionSource.BACKFILL)
    session.commit()

    assert [stored.created for stored in page] == [True, False, True]
    assert page[1].submission_id == earlier.submission_id
    ids = [stored.submission_id for stored in page]
    entry_ids = {row.id: row.entry_id for row in session.scalars(select(Submission))}
    assert [entry_ids[submission_id] for submission_id in ids] == ["1", "2", "3"]
    assert stored_count(session) == 3


def test_an_entry_twice_in_one_page_is_created_once(settings: Settings, session: Session) -> None:
    page = store_entries(session, site=settings.site, entries=[make_entry(7), make_entry(7)],
                         source=SubmissionSource.BACKFILL)
    session.commit()

    assert [stored.created for stored in page] == [True, False]
    assert page[0].submission_id == page[1].submission_id
    assert stored_count(session) == 1


def test_a_page_with_a_broken_entry_is_refused_whole(settings: Settings, session: Session) -> None:
    broken: dict[str, Any] = {"form_id": "1"}

    with pytest.raises(RejectedEntry, match="no 'id'"):
        store_entries(session, site=settings.site, entries=[make_entry(1), broken], source=SubmissionSource.BACKFILL)
    session.rollback()

    assert stored_count(session) == 0


def test_an_empty_page_stores_nothing(settings: Settings, session: Session) -> None:
    assert store_entries(session, site=settings.site, entries=[], source=SubmissionSource.BACKFILL) == []
