from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

import responses
from sqlalchemy import select
from sqlalchemy.orm import Session

from config.settings import Settings
from integrations.crm import CallbackTaskSpec, ContactCard, LogOnlyCRM
from integrations.errors import IntegrationError, RateLimited, ServiceUnavailable
from integrations.hubspot.client import HubSpotCRM
from integrations.messaging import SentMessage
from tests.conftest import REPO, make_entry
from worker.delivery.outbox import deliver
from worker.intake.entries import register_form, store_entry
from worker.leads.processing import process_submission
from worker.staff.roster import load_roster
from worker.staff.services import Services
from worker.store.db import utcnow
from worker.store.models import (
    EscalationTimer,
    Lead,
    OutboxKind,
    OutboxMessage,
    OutboxState,
    StaffAlert,
    Submission,
    SubmissionSource,
)


@dataclass
class RecordingMessenger:
    name: str = "recording"
    sent: list[tuple[str, str]] = field(default_factory=list)
    failures: list[IntegrationError] = field(default_factory=list)

    lose_answers: int = 0  # this many texts go out but their answer is lost (a timeout after Twilio sent them)
    lookups: int = 0

    def send_sms(self, to: str, body: str) -> SentMessage:
        if self.failures:
            raise self.failures.pop(0)
        self.sent.append((to, body))
        if self.lose_answers:
            self.lose_answers -= 1
            raise ServiceUnavailable("Twilio did not answer within 10s; will retry")
        return SentMessage(sid=f"SM{len(self.sent)}", status="queued")

    def find_sms(self, to: str, body: str) -> SentMessage | None:
        self.lookups += 1
        found = [n for n, text in enumerate(self.sent, start=1) if text == (to, body)]
        return SentMessage(sid=f"SM{found[-1]}", status="delivered") if found else None


@dataclass
class FailingCRM(LogOnlyCRM):
    failures: list[IntegrationError] = field(default_factory=list)

    def upsert_contact(self, card: ContactCard, contact_id: str | None) -> str:
        if self.failures:
            raise self.failures.pop(0)
        return super().upsert_contact(card, contact_id)

    def ensure_callback_task(self, contact_id: str, task: CallbackTaskSpec) -> str:
        return super().ensure_callback_task(contact_id, task)


def services(settings: Settings, **overrides: Any) -> Services:
    base = Services(settings, LogOnlyCRM(), RecordingMessenger(), load_roster(REPO / "config/roster.example.toml"))
    return replace(base, **overrides)


def new_lead_outbox(session: Session, settings: Settings, form_object: dict[str, Any], **fields: Any) -> dict[str, int]:
    register_form(session, site=settings.site, form_object=form_object)
    stored = store_entry(session, site=settings.site, entry=make_entry(1, **fields), source=SubmissionSource.CLI)
    session.commit()
    process_submission(session, stored.submission_id, settings)
    session.commit()
    rows = session.scalars(select(OutboxMessage)).all()
    return {row.kind: row.id for row in rows}


def test_a_staff_alert_texts_the_first_on_call_person_with_no_phi(
    session: Session, settings: Settings, form_object: dict[str, Any]
) -> None:
    ids = new_lead_outbox(session, settings, form_object, **{"1.3": "Zebulon", "4": "canary-crisis-words"})
    messenger = RecordingMessenger()
    when = utcnow()
    on_call = services(settings).roster.on_call_staff(when)[0]

    result = deliver(session, ids[OutboxKind.STAFF_ALERT], services(settings, messenger=messenger), now=when)

    assert result.state == OutboxState.DELIVERED
    [(to, body)] = messenger.sent
    lead = session.scalars(select(Lead)).one()
    assert to == on_call.phone
    assert lead.ref in body
    for phi in ("Zebulon", "Sample", "617", "0142", "jordan", "canary"):
        assert phi not in body
    alert = session.scalars(select(StaffAlert)).one()
    assert (alert.status, alert.provider_id, alert.staff_name) == ("queued", "SM1", on_call.name)


def test_a_transient_failure_is_retried_later_with_backoff(
    session: Session, settings: Settings, form_object: dict[str, Any]
) -> None:
    ids = new_lead_outbox(session, settings, form_object)
    messenger = RecordingMessenger(failures=[ServiceUnavailable("Twilio failed with 503; will retry")])
    before = utcnow()

    result = deliver(session, ids[OutboxKind.STAFF_ALERT], services(settings, messenger=messenger))

    row = session.get_one(OutboxMessage, ids[OutboxKind.STAFF_ALERT])
    assert result.state == OutboxState.PENDING and result.retry_in == timedelta(seconds=5)
    assert row.attempts == 1 and row.next_attempt_at >= before + timedelta(seconds=5)
    assert row.last_error == "Twilio failed with 503; will retry"
    unknown = session.scalars(select(StaffAlert)).one()
    assert unknown.status == "sending", "a 503 does not prove the text was not sent"

    not_due = deliver(session, row.id, services(settings, messenger=messenger))
    assert not_due.state is None and messenger.sent == []

    later = deliver(session, row.id, services(settings, messenger=messenger), now=utcnow() + timedelta(seconds=6))
    assert later.state == OutboxState.DELIVERED and len(messenger.sent) == 1 and messenger.lookups == 1
    first, second = session.scalars(select(StaffAlert).order_by(StaffAlert.id)).all()
    assert first.status == "failed" and "sent again" in (first.error or "")
    assert second.status == "queued" and second.provider_id == "SM1"


def test_a_text_that_went_out_but_lost_its_answer_is_found_and_not_sent_again(
    session: Session, settings: Settings, form_object: dict[str, Any]
) -> None:
    ids = new_lead_outbox(session, settings, form_object)
    messenger = RecordingMessenger(lose_answers=1)

    first = deliver(session, ids[OutboxKind.STAFF_ALERT], services(settings, messenger=messenger))
    retry = deliver(session, ids[OutboxKind.STAFF_ALERT], services(settings, messenger=messenger),
                    now=utcnow() + timedelta(seconds=6))

    assert first.state == OutboxState.PENDING and retry.state == OutboxState.DELIVERED
    assert len(messenger.sent) == 1, "staff are texted once"
    alert = session.scalars(select(StaffAlert)).one()
    assert (alert.status, alert.provider_id) == ("delivered", "SM1")
    timer = session.scalars(select(EscalationTimer)).one()
    assert timer.waiting_sms_sid == "SM1", "the reminder follows the text that went out"


def test_a_rate_limit_waits_as_long_as_the_provider_asks(
    session: Session, settings: Settings, form_object: dict[str, Any]
) -> None:
    ids = new_lead_outbox(session, settings, form_object)
    crm = FailingCRM(failures=[RateLimited("HubSpot rate limit hit; will retry", retry_after=42)])

    result = deliver(session, ids[OutboxKind.CRM_SYNC], services(settings, crm=crm))

    assert result.retry_in == timedelta(seconds=42)


def test_a_permanent_failure_is_parked_as_dead_with_what_to_do(
    session: Session, settings: Settings, form_object: dict[str, Any]
) -> None:
    ids = new_lead_outbox(session, settings, form_object)
    crm = FailingCRM(failures=[IntegrationError("HubSpot refused the credentials: set HUBSPOT_TOKEN", permanent=True)])

    result = deliver(session, ids[OutboxKind.CRM_SYNC], services(settings, crm=crm))

    row = session.get_one(OutboxMessage, ids[OutboxKind.CRM_SYNC])
    assert result.state == OutboxState.DEAD and row.state == OutboxState.DEAD
    assert row.last_error is not None and "HUBSPOT_TOKEN" in row.last_error


def test_a_row_that_keeps_failing_ends_dead_after_the_attempt_limit(
    session: Session, settings: Settings, form_object: dict[str, Any]
) -> None:
    ids = new_lead_outbox(session, settings, form_object)
    limited = settings.model_copy(update={"max_delivery_attempts": 2})
    crm = FailingCRM(failures=[ServiceUnavailable("down")] * 5)
    when = utcnow()

    first = deliver(session, ids[OutboxKind.CRM_SYNC], services(limited, crm=crm), now=when)
    second = deliver(session, ids[OutboxKind.CRM_SYNC], services(limited, crm=crm), now=when + timedelta(hours=1))

    assert (first.state, second.state) == (OutboxState.PENDING, OutboxState.DEAD)


def test_a_delivered_row_is_never_delivered_again(
    session: Session, settings: Settings, form_object: dict[str, Any]
) -> None:
    ids = new_lead_outbox(session, settings, form_object)
    messenger = RecordingMessenger()
    deliver(session, ids[OutboxKind.STAFF_ALERT], services(settings, messenger=messenger))

    again = deliver(session, ids[OutboxKind.STAFF_ALERT], services(settings, messenger=messenger))

    assert again.state is None and len(messenger.sent) == 1


def test_a_row_leased_by_another_worker_is_left_alone(
    session: Session, settings: Settings, form_object: dict[str, Any]
) -> None:
    ids = new_lead_outbox(session, settings, form_object)
    row = session.get_one(OutboxMessage, ids[OutboxKind.STAFF_ALERT])
    row.leased_until = utcnow() + timedelta(minutes=1)
    session.commit()
    messenger = RecordingMessenger()

    result = deliver(session, row.id, services(settings, messenger=messenger))

    assert result.state is None and messenger.sent == []


HUBSPOT = "https://api.hubapi.com"


@responses.activate
def test_a_retried_crm_sync_never_creates_a_second_contact_note_or_task(
    session: Session, settings: Settings, form_object: dict[str, Any]
) -> None:
    ids = new_lead_outbox(session, settings, form_object)
    crm = HubSpotCRM("pat-test-token")
    responses.post(f"{HUBSPOT}/crm/v3/objects/contacts/search", json={"total": 0, "results": []})
    responses.post(f"{HUBSPOT}/crm/v3/objects/contacts", json={"id": "501", "properties": {}}, status=201)
    responses.patch(f"{HUBSPOT}/crm/v3/objects/contacts/501", json={"id": "501", "properties": {}})
    responses.post(f"{HUBSPOT}/crm/v3/objects/notes", json={"id": "601", "properties": {}}, status=201)
    task_search = responses.post(
        f"{HUBSPOT}/crm/v3/objects/tasks/search", json={"total": 0, "results": []}
    )
    task_create = responses.post(f"{HUBSPOT}/crm/v3/objects/tasks", status=502, json={"status": "error"})

    first = deliver(session, ids[OutboxKind.CRM_SYNC], services(settings, crm=crm))
    assert first.state == OutboxState.PENDING

    tasks_url = f"{HUBSPOT}/crm/v3/objects/tasks"
    responses.replace(responses.POST, tasks_url, json={"id": "701", "properties": {}}, status=201)
    later = utcnow() + timedelta(minutes=1)
    second = deliver(session, ids[OutboxKind.CRM_SYNC], services(settings, crm=crm), now=later)

    assert second.state == OutboxState.DELIVERED
    calls = [(call.request.method, re.sub(r"https://[^/]+", "", call.request.url or "")) for call in responses.calls]
    assert calls.count(("POST", "/crm/v3/objects/contacts")) == 1
    assert calls.count(("POST", "/crm/v3/objects/notes")) == 1
    # The retry resumes at the task: this request's contact and note went in on the first attempt.
    assert ("PATCH", "/crm/v3/objects/contacts/501") not in calls
    # The first task POST failed with 502 and created nothing; the retry created the one task.
    assert task_search.call_count == 2 and task_create.call_count == 1
    assert calls.count(("POST", "/crm/v3/objects/tasks")) == 2
    lead = session.scalars(select(Lead)).one()
    assert (lead.crm_contact_id, lead.crm_task_id) == ("501", "701")
    assert session.get_one(Submission, 1).crm_note_id == "601"




def test_a_sync_for_a_lead_another_worker_is_syncing_waits_without_counting_an_attempt(
    session: Session, settings: Settings, form_object: dict[str, Any]
) -> None:
    ids = new_lead_outbox(session, settings, form_object)
    lead = session.scalars(select(Lead)).one()
    lead.crm_lease_until = utcnow() + timedelta(minutes=1)
    session.commit()

    result = deliver(session, ids[OutboxKind.CRM_SYNC], services(settings))

    row = session.get_one(OutboxMessage, ids[OutboxKind.CRM_SYNC])
    assert result.state == OutboxState.PENDING and result.retry_in is not None
    assert result.retry_in <= timedelta(seconds=2)
    assert (row.attempts, row.fruitless) == (1, 0) and lead.crm_contact_id is None


def test_a_person_who_ticked_ok_to_text_gets_a_phi_free_acknowledgement_when_enabled(
    session: Session, settings: Settings, form_object: dict[str, Any]
) -> None:
    enabled = settings.model_copy(update={"person_ack_sms": True, "twilio_from_number": "+18555550100"})
    register_form(session, site=settings.site, form_object=form_object)
    stored = store_entry(session, site=settings.site, entry=make_entry(1, **{"6.1": "Yes", "4": "canary-detox"}),
                         source=SubmissionSource.CLI)
    session.commit()
    outcome = process_submission(session, stored.submission_id, enabled)
    session.commit()
    ack = session.scalars(select(OutboxMessage).where(OutboxMessage.kind == OutboxKind.PERSON_ACK)).one()
    messenger = RecordingMessenger()

    deliver(session, ack.id, services(enabled, messenger=messenger))

    [(to, body)] = messenger.sent
    assert to == "+16175550142" and outcome.new_lead
    assert body == "We received your request and will call you from 855-555-0100 soon. Reply STOP to stop texts."
    for word in ("Jordan", "canary", "treatment", "detox", "admission"):
        assert word.lower() not in body.lower()


def test_no_acknowledgement_without_consent_to_texts_or_when_disabled(
    session: Session, settings: Settings, form_object: dict[str, Any]
) -> None:
    enabled = settings.model_copy(update={"person_ack_sms": True})
    register_form(session, site=settings.site, form_object=form_object)
    for entry_id, overrides, used in ((1, {}, enabled), (2, {"6.1": "Yes", "3": "(212) 555-0123", "2": None,
                                                               "1.3": "Morgan"}, settings)):
        stored = store_entry(session, site=settings.site, entry=make_entry(entry_id, **overrides),
                             source=SubmissionSource.CLI)
        session.commit()
        process_submission(session, stored.submission_id, used)
        session.commit()

    assert session.scalars(select(OutboxMessage).where(OutboxMessage.kind == OutboxKind.PERSON_ACK)).all() == []
