"""A page's leads, outbox rows and submission updates, written with one statement each, are what processing the
same entries one at a time writes, on SQLite and on PostgreSQL (docs/architecture.md#processing-a-page)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from config.settings import Settings, get_settings
from tests.conftest import empty_postgres, make_entry
from worker.intake.entries import register_form, store_entries
from worker.leads.processing import SOURCE_FLOOD, Outcome, process_submission, process_submissions
from worker.store.db import Base, session_scope
from worker.store.models import Lead, OutboxKind, OutboxMessage, Submission, SubmissionSource, SubmissionState

NOW = datetime.now(UTC).replace(microsecond=0)


def at(minutes: int) -> str:
    """A time `minutes` after an hour ago, as Gravity Forms writes it: recent enough that staff are texted."""
    return (NOW - timedelta(hours=1) + timedelta(minutes=minutes)).strftime("%Y-%m-%d %H:%M:%S")


def person(entry_id: int, first: str, last: str, phone: str | None, email: str | None, ip: str, minutes: int,
           **overrides: Any) -> dict[str, Any]:
    return make_entry(entry_id, **{"1.3": first, "1.6": last, "3": phone, "2": email, "ip": ip,
                                   "date_created": at(minutes), **overrides})


def scenario() -> list[dict[str, Any]]:
    """One page: a person writing twice minutes apart (staff hear once), two requests of one person kept apart
    until a third links them (a merge of two leads made in the page), four people on one office device within the
    hour (the third alert is the flood summary, the fourth none), a phone that cannot be read, spam, and an entry
    with no way to reach anyone."""
    return [
        person(1, "Jordan", "Sample", "(617) 555-0142", "jordan.sample@example.org", "192.0.2.1", 0),
        person(2, "Jordan", "Sample", "617.555.0142", "JORDAN.Sample@example.org", "192.0.2.2", 5),
        person(3, "Elizabeth", "Okafor", "(617) 555-0150", None, "192.0.2.3", 10),
        person(4, "Liz", "Okafor", None, "liz.okafor@example.org", "192.0.2.4", 12),
        person(5, "Elizabeth", "Okafor", "(617) 555-0150", "liz.okafor@example.org", "192.0.2.5", 40),
        person(6, "Avery", "Tester", "(617) 555-0161", "avery@example.org", "198.51.100.7", 20),
        person(7, "Blair", "Madeup", "(617) 555-0162", "blair@example.org", "198.51.100.7", 21),
        person(8, "Casey", "Fictional", "(617) 555-0163", "casey@example.org", "198.51.100.7", 22),
        person(9, "Devon", "Dummy", "(617) 555-0164", "devon@example.org", "198.51.100.7", 23),
        person(10, "Emery", "Specimen", "555-01", "emery@example.org", "192.0.2.10", 30),
        person(11, "Finley", "Example", "(617) 555-0170", "finley@example.org", "192.0.2.11", 31, status="spam"),
        person(12, "Harper", "Placeholder", None, "not an address", "192.0.2.12", 32),
    ]


def empty(settings: Settings) -> None:
    if settings.database_url.startswith("postgresql"):
        empty_postgres(settings)
        return
    with session_scope() as session:
        for table in reversed(Base.metadata.sorted_tables):
            session.execute(delete(table))


def written(settings: Settings, form_object: dict[str, Any], *, in_one_page: bool) -> dict[str, Any]:
    """Process the scenario (as one page, or one entry per transaction) on an empty database; what it wrote,
    with each lead named by the entries it holds, so that two runs compare whatever ids they drew."""
    empty(settings)
    with session_scope() as session:
        register_form(session, site=settings.site, form_object=form_object)
    with session_scope() as session:
        stored = store_entries(session, site=settings.site, entries=scenario(), source=SubmissionSource.CLI)
    ids = [each.submission_id for each in stored]
    if in_one_page:
        with session_scope() as session:
            outcomes = process_submissions(session, ids, settings)
    else:
        outcomes = []
        for submission_id in ids:
            with session_scope() as session:
                outcomes.append(process_submission(session, submission_id, settings))
    with session_scope() as session:
        return snapshot(session, ids, outcomes)


def snapshot(session: Session, ids: list[int], outcomes: list[Outcome]) -> dict[str, Any]:
    submissions = {each.id: each for each in session.scalars(select(Submission))}
    entry_of = {submission_id: submissions[submission_id].entry_id for submission_id in ids}
    members: dict[int, list[str]] = {}
    for each in submissions.values():
        if each.lead_id is not None:
            members.setdefault(each.lead_id, []).append(each.entry_id)
    leads = {lead.id: lead for lead in session.scalars(select(Lead))}
    name = {lead_id: ",".join(sorted(members.get(lead_id, [f"none:{lead.first_name}"])))
            for lead_id, lead in leads.items()}
    outbox = session.scalars(select(OutboxMessage)).all()
    for submission_id, outcome in zip(ids, outcomes, strict=True):
        assert sorted(outcome.outbox_ids) == sorted(row.id for row in outbox if row.submission_id == submission_id)
        assert outcome.lead_id is None or outcome.lead_id in leads
    return {
        "outcomes": [(entry_of[submission_id], outcome.state, outcome.new_lead, len(outcome.outbox_ids))
                     for submission_id, outcome in zip(ids, outcomes, strict=True)],
        "submissions": sorted(
            (each.entry_id, each.state, each.flag_reason, each.is_repeat, each.device_index, each.requested_at,
             name.get(each.lead_id) if each.lead_id else None,
             each.match_evidence and (each.match_evidence["outcome"], len(each.match_evidence["candidates"])))
            for each in submissions.values()
        ),
        "leads": sorted(
            (name[lead.id], lead.first_name, lead.last_name, lead.phone, lead.email, lead.phone_index,
             lead.email_index, lead.known_first_names, lead.consent_to_text, lead.consent, lead.priority,
             lead.status, lead.repeat_count, lead.created_at, lead.last_request_at,
             name[lead.merged_into_id] if lead.merged_into_id else None)
            for lead in leads.values()
        ),
        "outbox": sorted((entry_of[row.submission_id], row.kind, name[row.lead_id], row.state) for row in outbox),
    }


def check_the_page_writes_what_one_at_a_time_writes(settings: Settings, form_object: dict[str, Any],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALERT_SOURCE_MAX_PER_HOUR", "2")
    get_settings.cache_clear()
    settings = get_settings()

    in_one_page = written(settings, form_object, in_one_page=True)
    one_at_a_time = written(settings, form_object, in_one_page=False)

    assert in_one_page == one_at_a_time
    kinds = {(entry, kind) for entry, kind, _, _ in in_one_page["outbox"]}
    assert ("1", OutboxKind.STAFF_ALERT) in kinds and ("2", OutboxKind.STAFF_ALERT) not in kinds  # heard once
    assert ("8", OutboxKind.STAFF_ALERT) in kinds and ("9", OutboxKind.STAFF_ALERT) not in kinds  # the flood
    flags = {entry: reason for entry, _, reason, *_ in in_one_page["submissions"]}
    assert flags["8"] is not None and flags["8"].startswith(SOURCE_FLOOD)
    merged = [lead for lead in in_one_page["leads"] if lead[11] == "merged"]
    assert len(merged) == 1 and merged[0][-1] == "3,4,5"  # Liz's lead merged into Elizabeth's: the entries moved
    states = {entry: state for entry, state, *_ in in_one_page["submissions"]}
    assert (states["10"], states["11"], states["12"]) == (SubmissionState.PROCESSED, SubmissionState.SPAM,
                                                          SubmissionState.FLAGGED)


def test_a_page_writes_what_processing_one_entry_at_a_time_writes(
    settings: Settings, form_object: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    check_the_page_writes_what_one_at_a_time_writes(settings, form_object, monkeypatch)


@pytest.mark.services
def test_a_page_writes_what_processing_one_entry_at_a_time_writes_on_postgresql(
    pg_settings: Settings, form_object: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    check_the_page_writes_what_one_at_a_time_writes(pg_settings, form_object, monkeypatch)


def test_a_submission_the_session_holds_reads_what_processing_wrote(
    session: Session, settings: Settings, form_object: dict[str, Any]
) -> None:
    register_form(session, site=settings.site, form_object=form_object)
    [stored] = store_entries(session, site=settings.site, entries=[make_entry(1)], source=SubmissionSource.CLI)
    held = session.get_one(Submission, stored.submission_id)
    assert held.state == SubmissionState.RECEIVED

    outcome = process_submission(session, stored.submission_id, settings)

    assert held.state == SubmissionState.PROCESSED
    assert held.lead_id == outcome.lead_id and held.lead is not None and held.lead.id == outcome.lead_id
    assert outcome.new_lead and len(outcome.outbox_ids) == 2  # the CRM sync and the staff alert
