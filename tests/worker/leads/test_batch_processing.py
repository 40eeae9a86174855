"""A page of submissions processed in one transaction ends exactly as if each had been processed alone."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from config.settings import Settings
from integrations.gravityforms.mapping import ApplicantFields
from tests.conftest import EXAMPLES, make_entry
from tests.support.corpus import make_corpus
from tests.support.pipeline import lead_of_each_entry, scratch_session
from worker.delivery.dispatch import process_stored
from worker.intake.entries import register_form, store_entries
from worker.intake.screening import screen
from worker.leads.processing import Outcome, process_submission, process_submissions
from worker.store.db import session_scope
from worker.store.models import Lead, OutboxMessage, Submission, SubmissionSource, SubmissionState

PAGE = 50


def store(session: Session, settings: Settings, entries: list[dict[str, Any]]) -> list[int]:
    """Store entries as one page of history and commit; their submission ids, in the order given."""
    stored = store_entries(session, site=settings.site, entries=entries, source=SubmissionSource.BACKFILL)
    session.commit()
    return [each.submission_id for each in stored]


def process(session: Session, settings: Settings, submission_ids: list[int]) -> list[Outcome]:
    outcomes = process_submissions(session, submission_ids, settings)
    session.commit()
    return outcomes


def count(session: Session, model: type[Lead] | type[OutboxMessage]) -> int:
    return session.scalar(select(func.count()).select_from(model)) or 0


def lead_of(session: Session, submission_id: int) -> int | None:
    return session.scalar(select(Submission.lead_id).where(Submission.id == submission_id))


def state_of(session: Session, submission_id: int) -> str:
    return session.scalars(select(Submission.state).where(Submission.id == submission_id)).one()


@pytest.fixture
def form(session: Session, settings: Settings, form_object: dict[str, Any]) -> None:
    register_form(session, site=settings.site, form_object=form_object)
    session.commit()


def morgan(entry_id: int, **overrides: Any) -> dict[str, Any]:
    """Someone other than make_entry's Jordan Sample, on another phone, email and device."""
    return make_entry(entry_id, **{"1.3": "Morgan", "1.6": "Rivera", "2": "morgan.rivera@example.org",
                                   "3": "(212) 555-0177", "ip": "203.0.113.77", **overrides})


@pytest.mark.usefixtures("form")
def test_a_page_holding_one_person_twice_and_another_person_makes_two_leads_with_one_repeat(
    session: Session, settings: Settings
) -> None:
    jordan, other, jordan_again = store(session, settings, [
        make_entry(1, date_created="2026-11-20 14:02:11"),
        morgan(2, date_created="2026-11-20 14:03:00"),
        make_entry(3, date_created="2026-11-20 15:30:00",
                   **{"2": "JORDAN.Sample@EXAMPLE.org", "3": "+1 617.555.0142"}),
    ])

    given = [other, jordan_again, jordan]
    outcomes = process(session, settings, given)

    assert [outcome.lead_id for outcome in outcomes] == [lead_of(session, each) for each in given]
    by_id = dict(zip(given, outcomes, strict=True))
    assert by_id[jordan].new_lead and by_id[other].new_lead
    assert not by_id[jordan_again].new_lead
    assert by_id[jordan_again].lead_id == by_id[jordan].lead_id != by_id[other].lead_id
    assert all(outcome.state == SubmissionState.PROCESSED for outcome in outcomes)
    assert count(session, Lead) == 2
    assert session.get_one(Lead, by_id[jordan].lead_id).repeat_count == 1


@pytest.mark.usefixtures("form")
def test_two_people_sharing_a_phone_in_one_page_stay_two_leads(session: Session, settings: Settings) -> None:
    ids = store(session, settings, [
        make_entry(1, **{"2": None}),
        make_entry(2, date_created="2026-11-20 14:20:00", **{"1.3": "Morgan", "2": None, "3": "617-555-0142"}),
    ])

    first, second = process(session, settings, ids)

    assert first.new_lead and second.new_lead
    assert first.lead_id != second.lead_id
    assert count(session, Lead) == 2


@pytest.mark.usefixtures("form")
def test_entries_given_out_of_time_order_are_assigned_in_the_order_the_person_sent_them(
    session: Session, settings: Settings
) -> None:
    later, earlier = store(session, settings, [
        make_entry(2, date_created="2026-11-20 16:45:00", **{"2": "Jordan.Sample@example.org"}),
        make_entry(1, date_created="2026-11-20 09:15:00"),
    ])

    later_outcome, earlier_outcome = process(session, settings, [later, earlier])

    assert earlier_outcome.new_lead and not later_outcome.new_lead
    assert later_outcome.lead_id == earlier_outcome.lead_id
    lead = session.get_one(Lead, earlier_outcome.lead_id)
    assert lead.created_at == datetime(2026, 11, 20, 9, 15, tzinfo=UTC)
    assert lead.last_request_at == datetime(2026, 11, 20, 16, 45, tzinfo=UTC)
    assert session.get_one(Submission, later).is_repeat and not session.get_one(Submission, earlier).is_repeat


@pytest.mark.usefixtures("form")
def test_a_page_mixing_spam_screened_and_unreachable_entries_makes_a_lead_and_outbox_rows_for_the_person_only(
    session: Session, settings: Settings
) -> None:
    ids = store(session, settings, [
        morgan(1, status="spam"),
        morgan(2, **{"1.3": "Cheap pills www.example.ru", "2": "pills@example.org", "3": "(415) 555-0111"}),
        morgan(3, **{"1.3": "Avery", "2": "not-an-email", "3": "12"}),
        make_entry(4),
    ])

    outcomes = process(session, settings, ids)

    assert [outcome.state for outcome in outcomes] == [
        SubmissionState.SPAM, SubmissionState.FLAGGED, SubmissionState.FLAGGED, SubmissionState.PROCESSED,
    ]
    reasons = [session.get_one(Submission, each).flag_reason or "" for each in ids[1:3]]
    assert reasons[0].startswith("screened_link_in_name") and reasons[1].startswith("no_contact")
    assert [outcome.outbox_ids for outcome in outcomes[:3]] == [[], [], []] and outcomes[3].outbox_ids
    assert set(session.scalars(select(OutboxMessage.submission_id))) == {ids[3]}
    assert count(session, Lead) == 1 and outcomes[3].new_lead


@pytest.mark.usefixtures("form")
def test_processing_a_page_again_does_nothing(session: Session, settings: Settings) -> None:
    ids = store(session, settings, [
        make_entry(1), make_entry(2, date_created="2026-11-20 15:00:00"), morgan(3), morgan(4, status="spam"),
        morgan(5, **{"1.3": "Avery", "2": None, "3": "12"}),
    ])
    first = process(session, settings, ids)
    leads, rows = count(session, Lead), count(session, OutboxMessage)
    repeats = {lead.id: lead.repeat_count for lead in session.scalars(select(Lead))}
    assert [outcome.state for outcome in first] == [SubmissionState.PROCESSED] * 3 + [
        SubmissionState.SPAM, SubmissionState.FLAGGED,
    ]
    assert leads == 2 and rows > 0

    again = process(session, settings, ids)

    assert again == [Outcome(None)] * len(ids)
    assert (count(session, Lead), count(session, OutboxMessage)) == (leads, rows)
    session.expire_all()
    assert {lead.id: lead.repeat_count for lead in session.scalars(select(Lead))} == repeats


def lead_of_each_entry_in_pages(entries: Iterable[dict[str, Any]], settings: Settings) -> dict[str, int | None]:
    """Entry id -> its lead once all are in (None when flagged), stored and processed PAGE entries at a time."""
    pending = list(entries)
    with scratch_session() as session:
        register_form(session, site=settings.site, form_object=json.loads((EXAMPLES / "form.json").read_text()))
        session.commit()
        for start in range(0, len(pending), PAGE):
            process(session, settings, store(session, settings, pending[start:start + PAGE]))
        rows = session.execute(select(Submission.entry_id, Submission.lead_id))
        return {entry_id: lead_id for entry_id, lead_id in rows}


def partition(leads: dict[str, int | None]) -> set[frozenset[str]]:
    """The entries grouped by lead; each entry that is no lead's stands alone."""
    groups: dict[object, set[str]] = {}
    for entry_id, lead in leads.items():
        groups.setdefault(lead if lead is not None else f"flagged-{entry_id}", set()).add(entry_id)
    return {frozenset(group) for group in groups.values()}


def test_a_corpus_processed_in_pages_makes_the_same_leads_as_one_entry_at_a_time(settings: Settings) -> None:
    entries = [entry for entry, _ in make_corpus(people=120, seed=20261127)]

    one_at_a_time = partition(lead_of_each_entry(entries, settings))
    in_pages = partition(lead_of_each_entry_in_pages(entries, settings))

    assert len(entries) > 3 * PAGE
    assert sum(1 for group in one_at_a_time if len(group) > 1) > 20  # dedup had real work to do
    assert in_pages == one_at_a_time


def screen_raising_for(first_name: str) -> Callable[[ApplicantFields], str | None]:
    def screen_or_fail(fields: ApplicantFields) -> str | None:
        if fields.first_name == first_name:
            # An error whose message holds the person's details: none of it may reach the log.
            raise RuntimeError(f"cannot screen {fields.first_name} {fields.last_name} {fields.email} {fields.phone}")
        return screen(fields)

    return screen_or_fail


@pytest.mark.usefixtures("form")
def test_one_entry_that_cannot_be_processed_holds_up_no_other_and_its_details_stay_out_of_the_log(
    session: Session, settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    ids = store(session, settings, [
        make_entry(1),
        make_entry(2, **{"1.3": "Casey", "1.6": "Whitaker", "2": "casey.whitaker@example.org",
                         "3": "(303) 555-0188", "ip": "198.51.100.8"}),
        morgan(3),
    ])
    monkeypatch.setattr("worker.leads.processing.screen", screen_raising_for("Casey"))
    caplog.set_level(logging.DEBUG, logger="worker")

    outcomes = process_stored(ids, settings)

    assert outcomes[1] == Outcome(None)
    assert [outcomes[0].state, outcomes[2].state] == [SubmissionState.PROCESSED, SubmissionState.PROCESSED]
    assert outcomes[0].new_lead and outcomes[2].new_lead and outcomes[0].outbox_ids and outcomes[2].outbox_ids
    session.expire_all()
    assert [state_of(session, each) for each in ids] == [
        SubmissionState.PROCESSED, SubmissionState.RECEIVED, SubmissionState.PROCESSED,
    ]
    assert lead_of(session, ids[1]) is None and count(session, Lead) == 2

    logged = caplog.text + " ".join(record.getMessage() for record in caplog.records)
    assert any(record.levelno >= logging.WARNING for record in caplog.records)  # the failure was reported
    for detail in ("Casey", "Whitaker", "casey.whitaker", "555-0188", "5550188", "Jordan", "Sample",
                   "jordan.sample", "555-0142", "5550142", "Morgan", "Rivera", "morgan.rivera", "555-0177",
                   "5550177"):
        assert detail.lower() not in logged.lower()


AREA_CODES = ["617", "212", "415", "312", "206", "303"]
FIRST = ["Avery", "Blake", "Camila", "Dmitri", "Elena", "Farah", "Gabriel", "Hannah", "Isaac", "Jasmine"]
LAST = ["Okafor", "Nguyen", "Kowalski", "Haddad", "Lindqvist"]


def person_entry(round_no: int, person: int, entry_id: int, date_created: str, phone: str) -> dict[str, Any]:
    """Person `person` of a round: a name, phone, email and device no other person of any round has."""
    return make_entry(entry_id, date_created=date_created, ip=f"198.51.{round_no}.{person}", **{
        "1.3": FIRST[person % len(FIRST)], "1.6": LAST[person // len(FIRST)],
        "2": f"person.{round_no}.{person}@example.org", "3": phone,
    })


@pytest.mark.services
def test_a_page_and_a_single_submission_of_one_person_racing_on_postgresql_make_one_lead(
    pg_settings: Settings, form_object: dict[str, Any]
) -> None:
    with session_scope() as session:
        register_form(session, site=pg_settings.site, form_object=form_object)
    for round_no, area in enumerate(AREA_CODES):
        racer = (round_no * 7) % PAGE
        alone_at = "2026-11-20 13:59:00" if round_no % 2 else "2026-11-20 14:30:00"
        with session_scope() as session:
            page = store(session, pg_settings, [
                person_entry(round_no, person, round_no * 1000 + person, "2026-11-20 14:00:00",
                             f"({area}) 555-01{person:02d}")
                for person in range(PAGE)
            ])
            alone, = store(session, pg_settings, [
                person_entry(round_no, racer, round_no * 1000 + 999, alone_at, f"{area}.555.01{racer:02d}")
            ])
        start = threading.Barrier(2)

        def run_page(ids: list[int] = page, start: threading.Barrier = start) -> list[Outcome]:
            start.wait()
            with session_scope() as session:
                return process_submissions(session, ids, pg_settings)

        def run_alone(submission_id: int = alone, start: threading.Barrier = start) -> Outcome:
            start.wait()
            with session_scope() as session:
                return process_submission(session, submission_id, pg_settings)

        with ThreadPoolExecutor(max_workers=2) as pool:
            page_done, alone_done = pool.submit(run_page), pool.submit(run_alone)
            page_outcomes, alone_outcome = page_done.result(timeout=60), alone_done.result(timeout=60)

        assert alone_outcome.state == SubmissionState.PROCESSED
        assert all(outcome.state == SubmissionState.PROCESSED for outcome in page_outcomes)
        assert alone_outcome.lead_id == page_outcomes[racer].lead_id
        assert [alone_outcome.new_lead, page_outcomes[racer].new_lead].count(True) == 1
        with session_scope() as session:
            assert lead_of(session, alone) == lead_of(session, page[racer]) is not None
            assert len({lead_of(session, each) for each in page}) == PAGE
            assert count(session, Lead) == PAGE * (round_no + 1), f"round {round_no}"


@pytest.mark.services
def test_lock_rows_emptied_by_a_postgresql_crash_are_taken_again_and_the_person_stays_one_lead(
    pg_settings: Settings, form_object: dict[str, Any]
) -> None:
    with session_scope() as session:
        register_form(session, site=pg_settings.site, form_object=form_object)
        # Unlogged: kept out of the write-ahead log, and emptied by PostgreSQL's recovery after a crash.
        assert session.scalar(text("SELECT relpersistence FROM pg_class WHERE relname = 'lead_keys'")) == "u"
        first, = store(session, pg_settings, [person_entry(0, 1, 1, "2026-11-20 14:00:00", "(617) 555-0101")])
        process(session, pg_settings, [first])
        session.execute(text("TRUNCATE lead_keys"))  # what crash recovery leaves of an unlogged table
        session.commit()
        again, = store(session, pg_settings, [person_entry(0, 1, 2, "2026-11-20 16:00:00", "617.555.0101")])
        outcome, = process(session, pg_settings, [again])
        assert not outcome.new_lead
        assert lead_of(session, again) == lead_of(session, first) is not None
        assert count(session, Lead) == 1
        assert session.scalar(text("SELECT count(*) FROM lead_keys")), "the lock rows are inserted again"
