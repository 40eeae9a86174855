from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.orm import Session
from twilio.request_validator import RequestValidator

from config.settings import Settings
from tests.fakes.admissions import AVERY, BLAKE, alert_services, new_lead, next_weekday_morning, twilio_settings
from tests.fakes.twilio import AUTH_TOKEN, CENTER_NUMBER, PUBLIC_URL, RecordingMessenger, signed_post
from worker.delivery.outbox import deliver
from worker.staff.claims import HELP_TEXT
from worker.staff.escalation import escalate, lease_due_timers
from worker.staff.services import Services
from worker.staff.templates import spoken_ref
from worker.store.db import utcnow
from worker.store.models import (
    Claim,
    EscalationTimer,
    Lead,
    LeadStatus,
    OutboxKind,
    OutboxMessage,
    OutboxState,
    StaffAlert,
)
from worker.web.app import create_app

PERSON = "+16175550199"
ROUTES = [
    "/hooks/twilio/sms",
    "/hooks/twilio/status/message",
    "/hooks/twilio/status/call",
    "/hooks/twilio/voice/reminder?alert=1",
    "/hooks/twilio/voice/keypress?alert=1",
    "/hooks/twilio/voice/dial-status?claim=1",
    "/hooks/twilio/voice/inbound",
    "/hooks/twilio/voice/inbound/status",
    "/hooks/twilio/voice/inbound/whisper?call=1&staff=avery",
    "/hooks/twilio/voice/inbound/whisper-key?call=1&staff=avery",
    "/hooks/twilio/voice/inbound/ring-status?call=1&step=0",
    "/hooks/twilio/voice/inbound/recorded?call=1",
    "/hooks/twilio/voice/inbound/recording?call=1",
    "/hooks/twilio/voice/inbound/transcription?call=1",
]


def twiml(response: Any) -> ET.Element:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/xml")
    root = ET.fromstring(response.text)  # noqa: S314 (our own TwiML)
    assert root.tag == "Response"
    return root


@dataclass
class Desk:
    session: Session
    services: Services
    messenger: RecordingMessenger
    client: TestClient
    lead: Lead

    def alert(self) -> None:
        """The first alert texted, then five minutes on, the reminder call placed to Avery."""
        outbox_id = self.session.scalars(
            select(OutboxMessage.id).where(OutboxMessage.kind == OutboxKind.STAFF_ALERT)
        ).one()
        start = next_weekday_morning()
        deliver(self.session, outbox_id, self.services, now=start)
        for timer_id in lease_due_timers(self.session, start + timedelta(minutes=5)):
            escalate(self.session, timer_id, self.services, start + timedelta(minutes=5))

    @property
    def call(self) -> StaffAlert:
        return self.session.scalars(select(StaffAlert).where(StaffAlert.channel == "voice")).one()


@pytest.fixture
def desk(session: Session, settings: Settings, form_object: dict[str, Any]) -> Iterator[Desk]:
    configured = twilio_settings(settings)
    messenger = RecordingMessenger()
    services = alert_services(configured, messenger)
    new_lead(session, settings, form_object, **{"1.3": "Zebulonia", "3": "(617) 555-0199"})
    lead = session.scalars(select(Lead)).one()
    with TestClient(create_app(configured, services)) as client:
        yield Desk(session, services, messenger, client, lead)


@pytest.mark.parametrize("route", ROUTES)
def test_every_twilio_webhook_refuses_a_request_without_a_signature(desk: Desk, route: str) -> None:
    response = desk.client.post(route, data={"From": AVERY, "Body": "1", "CallSid": "CA1", "Digits": "1"})

    assert response.status_code == 403
    assert desk.session.scalars(select(Claim)).all() == []


@pytest.mark.parametrize("route", ROUTES)
def test_every_twilio_webhook_refuses_a_tampered_body(desk: Desk, route: str) -> None:
    params = {"From": BLAKE, "Body": "HELP", "Digits": "2"}
    signature = RequestValidator(AUTH_TOKEN).compute_signature(PUBLIC_URL + route, params)

    response = desk.client.post(route, data={**params, "Body": "1", "Digits": "1"},
                                headers={"X-Twilio-Signature": signature})

    assert response.status_code == 403


@pytest.mark.parametrize("route", ROUTES)
def test_every_twilio_webhook_refuses_a_signature_for_another_url(desk: Desk, route: str) -> None:
    params = {"From": AVERY, "Body": "HELP"}
    signature = RequestValidator(AUTH_TOKEN).compute_signature("https://elsewhere.example.org" + route, params)

    response = desk.client.post(route, data=params, headers={"X-Twilio-Signature": signature})

    assert response.status_code == 403


def test_a_signature_with_another_query_string_is_refused(desk: Desk) -> None:
    params = {"Digits": "1"}
    signature = RequestValidator(AUTH_TOKEN).compute_signature(
        PUBLIC_URL + "/hooks/twilio/voice/keypress?alert=1", params
    )

    response = desk.client.post("/hooks/twilio/voice/keypress?alert=2", data=params,
                                headers={"X-Twilio-Signature": signature})

    assert response.status_code == 403


@pytest.mark.parametrize("unset", [{"public_url": None}, {"twilio_auth_token": None}, {"twilio_auth_token":
                                                                                        SecretStr("")}])
def test_without_a_public_url_or_auth_token_every_twilio_webhook_is_refused(
    desk: Desk, unset: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    unconfigured = desk.services.settings.model_copy(update=unset)
    with TestClient(create_app(unconfigured, desk.services)) as client:
        response = signed_post(client, "/hooks/twilio/sms", {"From": AVERY, "Body": "HELP"})

    assert response.status_code == 403
    assert "refused with 403 until TWILIO_AUTH_TOKEN and ADMITFLOW_PUBLIC_URL are set" in caplog.text


def test_a_signed_help_text_is_answered_with_twiml(desk: Desk) -> None:
    root = twiml(signed_post(desk.client, "/hooks/twilio/sms", {"From": BLAKE, "To": CENTER_NUMBER, "Body": "HELP"}))

    assert [(child.tag, child.text) for child in root] == [("Message", HELP_TEXT)]


def test_replying_1_claims_the_lead_answers_by_sms_and_updates_the_crm_owner(desk: Desk) -> None:
    desk.alert()

    root = twiml(signed_post(desk.client, "/hooks/twilio/sms",
                             {"MessageSid": "SM" + "9" * 32, "From": AVERY, "To": CENTER_NUMBER, "Body": "1"}))

    [message] = root
    assert message.tag == "Message" and message.text is not None
    assert message.text.startswith(f"Claimed {desk.lead.ref} for you")
    desk.session.expire_all()
    assert desk.session.get_one(Lead, desk.lead.id).status == LeadStatus.CLAIMED
    assign = desk.session.scalars(select(OutboxMessage).where(OutboxMessage.kind == OutboxKind.CRM_ASSIGN)).one()
    # No broker in tests: the owner update was handed to this process after the answer. The CRM sync has not
    # run, so it waits for the task to exist.
    assert assign.attempts == 1 and assign.state == OutboxState.PENDING


def test_a_text_from_a_number_not_on_the_roster_gets_an_empty_answer(desk: Desk) -> None:
    root = twiml(signed_post(desk.client, "/hooks/twilio/sms", {"From": PERSON, "Body": "1"}))

    assert list(root) == []
    assert desk.session.scalars(select(Claim)).all() == []


def test_the_reminder_call_says_the_prompt_inside_a_one_key_gather(desk: Desk) -> None:
    desk.alert()
    alert_id = desk.call.id

    root = twiml(signed_post(desk.client, f"/hooks/twilio/voice/reminder?alert={alert_id}", {"CallSid": "CA1"}))

    gather = root.find("Gather")
    assert gather is not None
    assert gather.attrib["numDigits"] == "1"
    assert gather.attrib["action"] == f"{PUBLIC_URL}/hooks/twilio/voice/keypress?alert={alert_id}"
    prompt = ("There is an unclaimed confidential callback request, reference "
              f"{spoken_ref(desk.lead.ref)}. Press 1 to claim it and connect now.")
    assert [say.text for say in gather.findall("Say")] == [prompt, prompt]
    assert "Zebulonia" not in ET.tostring(root, encoding="unicode")


def test_pressing_1_claims_and_bridges_the_staff_member_to_the_person_from_the_center_number(desk: Desk) -> None:
    desk.alert()
    alert_id = desk.call.id

    root = twiml(signed_post(desk.client, f"/hooks/twilio/voice/keypress?alert={alert_id}",
                             {"CallSid": "CA1", "Digits": "1"}))

    claim = desk.session.scalars(select(Claim)).one()
    assert (claim.staff_id, claim.channel) == ("avery", "voice")
    say, dial = list(root)
    assert say.tag == "Say" and say.text is not None and "Connecting you now" in say.text
    assert PERSON not in (say.text or "")
    assert dial.tag == "Dial"
    assert dial.attrib["callerId"] == CENTER_NUMBER
    assert dial.attrib["action"] == f"{PUBLIC_URL}/hooks/twilio/voice/dial-status?claim={claim.id}"
    assert [(number.tag, number.text) for number in dial] == [("Number", PERSON)]


def test_pressing_another_key_repeats_the_prompt(desk: Desk) -> None:
    desk.alert()
    alert_id = desk.call.id

    root = twiml(signed_post(desk.client, f"/hooks/twilio/voice/keypress?alert={alert_id}", {"Digits": "7"}))

    assert [child.tag for child in root] == ["Say", "Redirect"]
    assert root.findtext("Redirect") == f"{PUBLIC_URL}/hooks/twilio/voice/reminder?alert={alert_id}"
    assert desk.session.scalars(select(Claim)).all() == []


def test_pressing_1_on_a_lead_someone_else_claimed_says_who_has_it_and_does_not_connect(desk: Desk) -> None:
    desk.alert()
    signed_post(desk.client, "/hooks/twilio/sms", {"From": BLAKE, "Body": f"CLAIM {desk.lead.ref}"})

    root = twiml(signed_post(desk.client, f"/hooks/twilio/voice/keypress?alert={desk.call.id}", {"Digits": "1"}))

    assert root.find("Dial") is None
    assert root.findtext("Say") == f"Reference {spoken_ref(desk.lead.ref)} was already claimed by Blake Example. " \
        "Goodbye."


def test_answering_a_reminder_for_a_claimed_lead_says_who_has_it(desk: Desk) -> None:
    desk.alert()
    signed_post(desk.client, "/hooks/twilio/sms", {"From": BLAKE, "Body": f"CLAIM {desk.lead.ref}"})

    root = twiml(signed_post(desk.client, f"/hooks/twilio/voice/reminder?alert={desk.call.id}", {}))

    assert root.find("Gather") is None
    assert "already been claimed by Blake Example" in (root.findtext("Say") or "")


def test_a_reminder_for_an_unknown_alert_says_it_is_no_longer_valid(desk: Desk) -> None:
    root = twiml(signed_post(desk.client, "/hooks/twilio/voice/reminder?alert=999", {}))

    assert root.findtext("Say") == "This reminder is no longer valid. Goodbye."


def test_the_bridged_call_outcome_is_recorded_on_the_claim(desk: Desk) -> None:
    desk.alert()
    signed_post(desk.client, f"/hooks/twilio/voice/keypress?alert={desk.call.id}", {"Digits": "1"})
    claim_id = desk.session.scalars(select(Claim.id)).one()

    root = twiml(signed_post(desk.client, f"/hooks/twilio/voice/dial-status?claim={claim_id}",
                             {"DialCallStatus": "completed", "DialCallDuration": "314", "DialCallSid": "CA77"}))

    desk.session.expire_all()
    claim = desk.session.get_one(Claim, claim_id)
    assert (claim.bridge_status, claim.bridge_seconds, claim.bridge_call_sid) == ("completed", 314, "CA77")
    assert claim.bridged_at is not None
    assert "logged in the CRM" in (root.findtext("Say") or "")


def test_a_bridged_call_the_person_did_not_answer_is_recorded_and_the_callback_stays_with_the_claimer(
    desk: Desk
) -> None:
    desk.alert()
    signed_post(desk.client, f"/hooks/twilio/voice/keypress?alert={desk.call.id}", {"Digits": "1"})
    claim_id = desk.session.scalars(select(Claim.id)).one()

    root = twiml(signed_post(desk.client, f"/hooks/twilio/voice/dial-status?claim={claim_id}",
                             {"DialCallStatus": "no-answer", "DialCallDuration": "0"}))

    desk.session.expire_all()
    claim = desk.session.get_one(Claim, claim_id)
    assert (claim.bridge_status, claim.bridged_at) == ("no-answer", None)
    assert "did not answer" in (root.findtext("Say") or "")


def test_status_callbacks_are_recorded_and_an_unanswered_call_makes_the_timer_due_now(
    desk: Desk, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    desk.alert()
    text = desk.session.scalars(select(StaffAlert).where(StaffAlert.channel == "sms")).one()
    call = desk.call

    twiml(signed_post(desk.client, "/hooks/twilio/status/message",
                      {"MessageSid": text.provider_id or "", "MessageStatus": "delivered"}))
    twiml(signed_post(desk.client, "/hooks/twilio/status/call",
                      {"CallSid": call.provider_id or "", "CallStatus": "no-answer", "CallDuration": "0"}))

    desk.session.expire_all()
    assert desk.session.get_one(StaffAlert, text.id).status == "delivered"
    assert desk.session.get_one(StaffAlert, call.id).status == "no-answer"
    timer = desk.session.scalars(select(EscalationTimer)).one()
    assert timer.due_at <= utcnow()
    assert "reminder call was no-answer" in caplog.text
