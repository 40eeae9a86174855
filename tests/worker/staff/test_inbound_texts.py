from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from config.settings import Settings
from tests.fakes.admissions import (
    AVERY,
    NoteRecordingCRM,
    alert_services,
    new_lead,
    next_weekday_morning,
    twilio_settings,
)
from tests.fakes.twilio import RecordingMessenger
from worker.delivery.outbox import deliver
from worker.leads.processing import process_submission
from worker.staff.claims import USAGE_TEXT
from worker.staff.inbound_texts import DEFAULT_PUBLIC_HELP, TextAnswer, answer_text
from worker.staff.services import Services
from worker.store.models import (
    Claim,
    Lead,
    OutboxKind,
    OutboxMessage,
    OutboxState,
    Submission,
    SubmissionSource,
    SubmissionState,
)

PERSON = "+16175550171"
NOW = next_weekday_morning()
AUTO_REPLY = "Thank you for your text. Our admissions team will call you back soon. Reply STOP to stop texts."


def sid(n: int) -> str:
    return f"SM{n:032x}"


class Desk:
    def __init__(self, session: Session, settings: Settings, **overrides: Any) -> None:
        self.session, self.messenger, self.crm = session, RecordingMessenger(), NoteRecordingCRM()
        self.services: Services = alert_services(twilio_settings(settings, **overrides), self.messenger, self.crm)

    def text(self, body: str, sender: str = PERSON, n: int = 1, media: int = 0) -> TextAnswer:
        answer = answer_text(self.session, sid(n), sender, body, media, self.services, NOW)
        self.session.commit()
        for submission_id in answer.submission_ids:
            process_submission(self.session, submission_id, self.services.settings)
            self.session.commit()
        return answer

    def deliver_all(self) -> None:
        for row_id in self.session.scalars(select(OutboxMessage.id).where(
                OutboxMessage.state == OutboxState.PENDING).order_by(OutboxMessage.id)).all():
            deliver(self.session, row_id, self.services, now=NOW, batches=False)


@pytest.fixture
def desk(session: Session, settings: Settings) -> Desk:
    return Desk(session, settings)


def test_a_text_from_someone_not_on_the_roster_becomes_a_lead_with_their_words_in_the_crm(desk: Desk) -> None:
    answer = desk.text("Hi, I need to talk to someone about my drinking", media=1)

    assert answer.reply is None and len(answer.submission_ids) == 1
    lead = desk.session.scalars(select(Lead)).one()
    submission = desk.session.scalars(select(Submission)).one()
    assert (lead.phone, submission.source, submission.entry_id) == (PERSON, SubmissionSource.SMS, sid(1))
    desk.deliver_all()
    [(to, alert)] = desk.messenger.texts
    assert to == AVERY and alert.startswith(f"admitflow: New TEXT to the admissions line: callback request {lead.ref}")
    assert "drinking" not in alert
    [(_, note)] = desk.crm.notes
    assert note == (f"Text message {lead.ref} (message {sid(1)}):\n\nMessage:\n"
                    "Hi, I need to talk to someone about my drinking\n"
                    "(1 picture(s) or file(s) attached, kept at Twilio)")
    [(_, task)] = desk.crm.tasks
    assert "a text to the admissions line" in task.body


def test_twilio_repeating_the_same_text_webhook_stores_it_once(desk: Desk) -> None:
    first, again = desk.text("Please call me"), desk.text("Please call me")

    assert (len(first.submission_ids), again.submission_ids) == (1, [])
    assert len(desk.session.scalars(select(Submission)).all()) == 1


def test_a_second_text_from_the_same_person_joins_their_lead(desk: Desk) -> None:
    desk.text("Please call me", n=1)
    desk.text("Sorry, after 5pm is best", n=2)

    lead = desk.session.scalars(select(Lead)).one()
    assert lead.repeat_count == 1


def test_a_text_from_someone_who_sent_the_form_joins_that_lead(
    desk: Desk, settings: Settings, form_object: dict[str, Any]
) -> None:
    new_lead(desk.session, settings, form_object, **{"3": "(617) 555-0171"})

    desk.text("Just sent the form, please call")

    lead = desk.session.scalars(select(Lead)).one()
    assert (lead.first_name, lead.repeat_count) == ("Jordan", 1)


@pytest.mark.parametrize("keyword", ["STOP", "stop", "Unsubscribe", "START"])
def test_opt_out_and_opt_in_keywords_are_left_to_twilio_and_make_no_lead(desk: Desk, keyword: str) -> None:
    answer = desk.text(keyword)

    assert (answer.reply, answer.submission_ids) == (None, [])
    assert desk.session.scalars(select(Submission)).all() == []


def test_help_from_the_public_gets_the_public_help_text_and_no_lead(desk: Desk) -> None:
    assert desk.text("HELP").reply == DEFAULT_PUBLIC_HELP
    assert desk.session.scalars(select(Submission)).all() == []


def test_a_staff_reply_still_claims_and_is_no_lead(desk: Desk, settings: Settings,
                                                   form_object: dict[str, Any]) -> None:
    ids = new_lead(desk.session, settings, form_object)
    deliver(desk.session, ids[OutboxKind.STAFF_ALERT], desk.services, now=NOW)

    answer = desk.text("1", sender=AVERY)

    assert answer.reply is not None and answer.reply.startswith("Claimed ")
    assert desk.session.scalars(select(Claim.staff_id)).all() == ["avery"]
    assert desk.session.scalars(select(Submission.source)).all() == [SubmissionSource.CLI]
    assert desk.text("what?", sender=AVERY, n=2).reply == USAGE_TEXT


def test_with_an_auto_reply_set_the_person_gets_it_once_a_day(session: Session, settings: Settings) -> None:
    desk = Desk(session, settings, sms_auto_reply=AUTO_REPLY)

    desk.text("Please call me", n=1)
    desk.deliver_all()
    desk.text("Are you there?", n=2)
    desk.deliver_all()

    assert [(to, body) for to, body in desk.messenger.texts if to == PERSON] == [(PERSON, AUTO_REPLY)]


def test_without_an_auto_reply_the_person_gets_no_text(desk: Desk) -> None:
    desk.text("Please call me")
    desk.deliver_all()

    assert [to for to, _ in desk.messenger.texts] == [AVERY]
    assert OutboxKind.PERSON_ACK not in desk.session.scalars(select(OutboxMessage.kind)).all()


def test_with_texts_not_taken_as_leads_a_text_from_the_public_is_ignored_as_before(
    session: Session, settings: Settings
) -> None:
    desk = Desk(session, settings, sms_inbound_leads=False)

    assert desk.text("Please call me").reply is None
    assert desk.session.scalars(select(Submission)).all() == []


@pytest.mark.parametrize("sender", ["12345", "ALERTS", ""])
def test_a_text_from_a_short_code_or_a_name_is_no_lead(desk: Desk, sender: str) -> None:
    assert desk.text("Your code is 1234", sender=sender).submission_ids == []


def test_a_text_full_of_links_is_kept_and_flagged_for_an_operator(desk: Desk) -> None:
    desk.text("win http://a.example.org http://b.example.org http://c.example.org http://d.example.org")

    submission = desk.session.scalars(select(Submission)).one()
    assert submission.state == SubmissionState.FLAGGED and (submission.flag_reason or "").startswith("screened_")
    assert desk.session.scalars(select(Lead)).all() == []


def test_a_reply_older_than_a_day_does_not_stop_the_next_one(session: Session, settings: Settings) -> None:
    desk = Desk(session, settings, sms_auto_reply=AUTO_REPLY)
    desk.text("Please call me", n=1)
    ack = desk.session.scalars(select(OutboxMessage).where(OutboxMessage.kind == OutboxKind.PERSON_ACK)).one()
    ack.created_at -= timedelta(days=2)
    desk.session.commit()

    desk.text("Still waiting", n=2)

    assert len(desk.session.scalars(select(OutboxMessage).where(
        OutboxMessage.kind == OutboxKind.PERSON_ACK)).all()) == 2
