"""A page being processed takes along the submissions queued behind it, never one another page holds."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from config.settings import Settings
from tests.conftest import make_entry
from worker.delivery.dispatch import process_stored
from worker.intake.entries import register_form, store_entries
from worker.leads.processing import lock_page
from worker.store.db import new_session, utcnow
from worker.store.models import Submission, SubmissionSource, SubmissionState


def stored_ago(session: Session, settings: Settings, form_object: dict[str, Any], *ages: timedelta) -> list[int]:
    """One stored entry per age, received that long ago, from different people."""
    register_form(session, site=settings.site, form_object=form_object)
    entries = [make_entry(n, ip=f"2001:db8::{n:x}", **{"2": f"person{n}@example.org", "3": f"+1617555{n:04d}",
                                                       "1.6": "Sample" + "x" * n})
               for n in range(1, len(ages) + 1)]
    ids = [each.submission_id for each in store_entries(session, site=settings.site, entries=entries,
                                                        source=SubmissionSource.CLI)]
    now = utcnow()
    for submission_id, age in zip(ids, ages, strict=True):
        session.execute(update(Submission).where(Submission.id == submission_id).values(received_at=now - age))
    session.commit()
    return ids


def test_a_page_takes_its_own_entries_first_then_those_waiting_their_turn_but_not_the_sweepers(
    session: Session, settings: Settings, form_object: dict[str, Any]
) -> None:
    just_in, waiting, also_waiting, forgotten, _just_after = stored_ago(
        session, settings, form_object, timedelta(0), timedelta(seconds=5), timedelta(seconds=3),
        timedelta(minutes=30), timedelta(0))

    assert lock_page(session, [just_in], 50) == [just_in, waiting, also_waiting]
    session.rollback()
    assert lock_page(session, [just_in], 2) == [just_in, waiting]
    session.rollback()
    assert lock_page(session, [forgotten], 50) == [forgotten, waiting, also_waiting]


def test_the_page_taken_is_processed_as_one_and_answers_for_every_entry_it_took(
    session: Session, settings: Settings, form_object: dict[str, Any]
) -> None:
    just_in, waiting = stored_ago(session, settings, form_object, timedelta(0), timedelta(seconds=5))

    outcomes = process_stored([just_in], settings, take_waiting=True)

    assert len(outcomes) == 2 and all(outcome.state == SubmissionState.PROCESSED for outcome in outcomes)
    assert {outcome.lead_id for outcome in outcomes} == {
        lead_id for lead_id in session.scalars(select(Submission.lead_id).execution_options(populate_existing=True))}
    # The waiting entry's own message comes later and finds nothing left to do.
    assert process_stored([waiting], settings, take_waiting=True) == []


def test_a_row_another_page_holds_is_left_to_it_even_one_of_this_pages_own(
    pg_settings: Settings, form_object: dict[str, Any]
) -> None:
    with new_session() as setup:
        mine, held, waiting = stored_ago(setup, pg_settings, form_object, timedelta(seconds=2),
                                         timedelta(seconds=5), timedelta(seconds=5))
    holder, taker = new_session(), new_session()
    try:
        holder.scalars(select(Submission).where(Submission.id.in_([mine, held])).with_for_update()).all()
        taker.execute(text("SET lock_timeout = '2s'"))

        assert lock_page(taker, [mine], 50) == [waiting]

        holder.rollback()
        taker.rollback()
        assert lock_page(taker, [mine], 50) == [mine, held, waiting]
    finally:
        holder.close()
        taker.close()
