from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from config.settings import Settings
from tests.conftest import make_entry
from worker.intake.entries import register_form, store_entry
from worker.leads.processing import Outcome, process_submission
from worker.store.models import Lead, OutboxKind, OutboxMessage, Submission, SubmissionSource, SubmissionState


def ingest(session: Session, settings: Settings, entry: dict[str, Any]) -> Outcome:
    stored = store_entry(session, site=settings.site, entry=entry, source=SubmissionSource.CLI)
    session.commit()
    outcome = process_submission(session, stored.submission_id, settings)
    session.commit()
    return outcome


def lead_count(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(Lead)) or 0


def test_it_turns_a_new_entry_into_a_lead_with_normalized_contact(
    session: Session, settings: Settings, form_object: dict[str, Any]
) -> None:
    register_form(session, site=settings.site, form_object=form_object)
    outcome = ingest(session, settings, make_entry(1, **{"2": " Jordan.Sample@Example.ORG", "3": "617.555.0142"}))

    assert outcome.state == SubmissionState.PROCESSED and outcome.new_lead
    lead = session.get_one(Lead, outcome.lead_id)
    assert (lead.first_name, lead.last_name) == ("Jordan", "Sample")
    assert lead.phone == "+16175550142"
    assert lead.email == "jordan.sample@example.org"
    assert lead.consent_to_text is False  # the form asks "OK to text me?" and the box was left empty
    assert lead.ref.startswith("R-") and len(lead.ref) == 7
    kinds = sorted(session.scalars(select(OutboxMessage.kind).where(OutboxMessage.lead_id == lead.id)))
    assert kinds == [OutboxKind.CRM_SYNC, OutboxKind.STAFF_ALERT]


def test_a_ticked_ok_to_text_box_is_kept_with_the_lead(
    session: Session, settings: Settings, form_object: dict[str, Any]
) -> None:
    register_form(session, site=settings.site, form_object=form_object)
    outcome = ingest(session, settings, make_entry(1, **{"6.1": "Yes"}))

    assert session.get_one(Lead, outcome.lead_id).consent_to_text is True


def test_it_stores_names_phones_emails_and_payloads_encrypted(
    session: Session, settings: Settings, form_object: dict[str, Any]
) -> None:
    register_form(session, site=settings.site, form_object=form_object)
    ingest(session, settings, make_entry(1, **{"1.3": "Zebulon", "4": "canary-message-text"}))

    raw_rows = session.execute(text("SELECT first_name, phone, email FROM leads")).all()
    raw_payloads = session.execute(text("SELECT payload FROM submissions")).scalars().all()
    stored = " ".join(str(value) for row in raw_rows for value in row) + " ".join(raw_payloads)
    for plaintext in ("Zebulon", "+16175550142", "5550142", "jordan.sample", "canary-message-text"):
        assert plaintext not in stored


def test_the_same_person_written_differently_is_one_lead_with_a_repeat(
    session: Session, settings: Settings, form_object: dict[str, Any]
) -> None:
    register_form(session, site=settings.site, form_object=form_object)
    first = ingest(session, settings, make_entry(1))
    second = ingest(session, settings, make_entry(2, **{"2": "JORDAN.SAMPLE@example.org", "3": "+1 (617) 555 0142"}))

    assert second.lead_id == first.lead_id and not second.new_lead
    lead = session.get_one(Lead, first.lead_id)
    assert lead.repeat_count == 1
    assert session.get_one(Submission, 2).is_repeat


def test_a_phone_match_alone_joins_and_fills_the_missing_email(
    session: Session, settings: Settings, form_object: dict[str, Any]
) -> None:
    register_form(session, site=settings.site, form_object=form_object)
    first = ingest(session, settings, make_entry(1, **{"2": None}))
    second = ingest(session, settings, make_entry(2, **{"2": "late.email@example.org", "3": "617-555-0142"}))

    assert second.lead_id == first.lead_id
    assert session.get_one(Lead, first.lead_id).email == "late.email@example.org"


def test_two_people_with_the_same_name_are_never_merged(
    session: Session, settings: Settings, form_object: dict[str, Any]
) -> None:
    register_form(session, site=settings.site, form_object=form_object)
    a = ingest(session, settings, make_entry(1))
    b = ingest(session, settings, make_entry(2, **{"2": "other.jordan@example.org", "3": "(212) 555-0177",
                                                   "ip": "203.0.113.77"}))

    assert a.lead_id != b.lead_id and b.new_lead
    assert lead_count(session) == 2


def test_two_people_sharing_a_household_phone_stay_two_leads(
    session: Session, settings: Settings, form_object: dict[str, Any]
) -> None:
    register_form(session, site=settings.site, form_object=form_object)
    a = ingest(session, settings, make_entry(1, **{"2": None}))
    b = ingest(session, settings, make_entry(2, **{"1.3": "Morgan", "2": None}))

    assert a.lead_id != b.lead_id
    assert lead_count(session) == 2


def test_a_person_returning_after_the_window_is_a_new_lead(
    session: Session, settings: Settings, form_object: dict[str, Any]
) -> None:
    register_form(session, site=settings.site, form_object=form_object)
    a = ingest(session, settings, make_entry(1, date_created="2026-01-01 10:00:00"))
    b = ingest(session, settings, make_entry(2, date_created="2026-03-01 10:00:00"))

    assert a.lead_id != b.lead_id and b.new_lead


def test_entries_gravity_forms_marked_spam_are_kept_but_never_become_leads(
    session: Session, settings: Settings, form_object: dict[str, Any]
) -> None:
    register_form(session, site=settings.site, form_object=form_object)
    outcome = ingest(session, settings, make_entry(1, status="spam"))

    assert outcome.state == SubmissionState.SPAM and outcome.outbox_ids == []
    assert lead_count(session) == 0
    assert session.get_one(Submission, 1).state == SubmissionState.SPAM


def test_an_entry_without_a_valid_phone_or_email_is_flagged_for_review(
    session: Session, settings: Settings, form_object: dict[str, Any]
) -> None:
    register_form(session, site=settings.site, form_object=form_object)
    outcome = ingest(session, settings, make_entry(1, **{"2": "not-an-email", "3": "12"}))

    submission = session.get_one(Submission, 1)
    assert outcome.state == SubmissionState.FLAGGED
    assert submission.flag_reason is not None and submission.flag_reason.startswith("no_contact")
    assert "Jordan" not in submission.flag_reason
    assert lead_count(session) == 0


def test_an_entry_of_an_unregistered_form_is_held_until_the_form_is_registered(
    session: Session, settings: Settings, form_object: dict[str, Any]
) -> None:
    outcome = ingest(session, settings, make_entry(1))
    assert outcome.state == SubmissionState.FLAGGED

    _, released = register_form(session, site=settings.site, form_object=form_object)
    session.commit()
    assert released == [1]
    again = process_submission(session, 1, settings)
    session.commit()
    assert again.state == SubmissionState.PROCESSED and again.new_lead


def test_processing_a_submission_twice_does_the_work_once(
    session: Session, settings: Settings, form_object: dict[str, Any]
) -> None:
    register_form(session, site=settings.site, form_object=form_object)
    ingest(session, settings, make_entry(1))

    again = process_submission(session, 1, settings)
    session.commit()

    assert again.state is None
    assert session.scalar(select(func.count()).select_from(OutboxMessage)) == 2
    assert session.get_one(Lead, 1).repeat_count == 0


def test_storing_the_same_entry_twice_keeps_one_submission(session: Session, settings: Settings) -> None:
    first = store_entry(session, site=settings.site, entry=make_entry(7), source=SubmissionSource.WEBHOOK)
    second = store_entry(session, site=settings.site, entry=make_entry(7), source=SubmissionSource.POLL)
    other_site = store_entry(session, site="second-site", entry=make_entry(7), source=SubmissionSource.POLL)
    session.commit()

    assert first.created and not second.created and other_site.created
    assert second.submission_id == first.submission_id
    assert session.scalar(select(func.count()).select_from(Submission)) == 2


def test_a_burst_of_repeat_requests_alerts_staff_once_but_syncs_each_to_the_crm(
    session: Session, settings: Settings, form_object: dict[str, Any]
) -> None:
    register_form(session, site=settings.site, form_object=form_object)
    for entry_id in range(1, 6):
        ingest(session, settings, make_entry(entry_id))

    kinds = list(session.scalars(select(OutboxMessage.kind)))
    assert kinds.count(OutboxKind.STAFF_ALERT) == 1
    assert kinds.count(OutboxKind.CRM_SYNC) == 5


def test_a_repeat_request_after_the_quiet_period_alerts_staff_again(
    session: Session, settings: Settings, form_object: dict[str, Any]
) -> None:
    register_form(session, site=settings.site, form_object=form_object)
    ingest(session, settings, make_entry(1))
    session.execute(text("UPDATE outbox SET created_at = :old"), {"old": "2026-01-01 00:00:00+00:00"})
    session.commit()

    outcome = ingest(session, settings, make_entry(2))

    alert_rows = session.scalars(select(OutboxMessage).where(OutboxMessage.kind == OutboxKind.STAFF_ALERT)).all()
    assert len(alert_rows) == 2 and alert_rows[1].submission_id == 2 and not outcome.new_lead


def test_a_quick_resubmission_correcting_a_mistyped_phone_and_email_is_the_same_lead_with_the_correction(
    session: Session, settings: Settings, form_object: dict[str, Any]
) -> None:
    register_form(session, site=settings.site, form_object=form_object)
    typo = ingest(session, settings, make_entry(1, date_created="2026-11-20 14:02:11",
                                               **{"3": "(617) 555-0124", "2": "jordan.smaple@example.org"}))
    fixed = ingest(session, settings, make_entry(2, date_created="2026-11-20 14:06:40",
                                                **{"3": "(617) 555-0142", "2": "jordan.sample@example.org"}))

    assert fixed.lead_id == typo.lead_id and not fixed.new_lead
    lead = session.get_one(Lead, typo.lead_id)
    assert (lead.phone, lead.email) == ("+16175550142", "jordan.sample@example.org")


def test_a_different_device_or_a_later_hour_is_not_evidence_of_a_correction(
    session: Session, settings: Settings, form_object: dict[str, Any]
) -> None:
    register_form(session, site=settings.site, form_object=form_object)
    first = ingest(session, settings, make_entry(1, **{"3": "(617) 555-0124", "2": "a1@example.org"}))
    other_device = ingest(session, settings, make_entry(2, ip="203.0.113.9", **{"3": "(617) 555-0142",
                                                                                "2": "a2@example.org"}))
    much_later = ingest(session, settings, make_entry(3, date_created="2026-11-20 18:00:00",
                                                     **{"3": "(617) 555-0155", "2": "a3@example.org"}))

    assert len({first.lead_id, other_device.lead_id, much_later.lead_id}) == 3


def test_asking_again_within_hours_makes_the_lead_high_priority(
    session: Session, settings: Settings, form_object: dict[str, Any]
) -> None:
    register_form(session, site=settings.site, form_object=form_object)
    first = ingest(session, settings, make_entry(1, date_created="2026-11-20 09:00:00"))
    assert session.get_one(Lead, first.lead_id).priority == "normal"

    ingest(session, settings, make_entry(2, date_created="2026-11-20 11:30:00"))

    assert session.get_one(Lead, first.lead_id).priority == "high"


def test_a_screened_submission_is_flagged_kept_and_can_be_released_by_an_operator(
    session: Session, settings: Settings, form_object: dict[str, Any]
) -> None:
    register_form(session, site=settings.site, form_object=form_object)
    outcome = ingest(session, settings, make_entry(1, **{"1.3": "Buy now www.example.ru"}))

    submission = session.get_one(Submission, 1)
    assert outcome.state == SubmissionState.FLAGGED and lead_count(session) == 0
    assert submission.flag_reason is not None and submission.flag_reason.startswith("screened_link_in_name")
    assert "example.ru" not in submission.flag_reason

    submission.state, submission.released = SubmissionState.RECEIVED, True
    session.commit()
    released = process_submission(session, 1, settings)
    session.commit()
    assert released.state == SubmissionState.PROCESSED and lead_count(session) == 1


def test_the_forms_consent_box_is_kept_with_the_lead(
    session: Session, settings: Settings, form_object: dict[str, Any]
) -> None:
    register_form(session, site=settings.site, form_object=form_object)
    agreed = ingest(session, settings, make_entry(1))
    declined = ingest(session, settings, make_entry(2, **{"5.1": None, "3": "(212) 555-0111", "2": None,
                                                          "1.3": "Morgan"}))

    assert session.get_one(Lead, agreed.lead_id).consent is True
    assert session.get_one(Lead, declined.lead_id).consent is False
