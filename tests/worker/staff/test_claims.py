from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
import responses
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.orm import Session

from config.settings import Settings
from integrations.crm import CallbackTaskSpec, LogOnlyCRM
from integrations.hubspot.client import HubSpotCRM
from tests.fakes.admissions import AVERY, BLAKE, alert_services, new_lead, next_weekday_morning
from tests.fakes.twilio import RecordingMessenger
from worker.delivery.outbox import deliver
from worker.staff.claims import (
    HELP_TEXT,
    USAGE_TEXT,
    ClaimOutcome,
    Reply,
    ReplyKind,
    answer_sms,
    claim_lead,
    parse_reply,
)
from worker.staff.services import Services
from worker.store.db import new_session
from worker.store.models import (
    Claim,
    EscalationTimer,
    Lead,
    LeadStatus,
    OutboxKind,
    OutboxMessage,
    OutboxState,
    StaffAlert,
    TimerState,
)

NOT_STAFF = "+16175550142"


@pytest.mark.parametrize(
    ("body", "reply"),
    [
        ("1", Reply(ReplyKind.CLAIM)),
        (" yes ", Reply(ReplyKind.CLAIM)),
        ("Claim", Reply(ReplyKind.CLAIM)),
        ("CLAIM!", Reply(ReplyKind.CLAIM)),
        ("CLAIM R-7K2QX", Reply(ReplyKind.CLAIM, "R-7K2QX")),
        ("claim r7k2qx", Reply(ReplyKind.CLAIM, "R-7K2QX")),
        ("R-7K2QX", Reply(ReplyKind.CLAIM, "R-7K2QX")),
        ("claim R-7K2QO", Reply(ReplyKind.CLAIM, "R-7K2Q0")),
        ("CLAIM R-1LIO0", Reply(ReplyKind.CLAIM, "R-11100")),
        ("STOP", Reply(ReplyKind.OPT_OUT)),
        ("unsubscribe", Reply(ReplyKind.OPT_OUT)),
        ("START", Reply(ReplyKind.OPT_IN)),
        ("help", Reply(ReplyKind.HELP)),
        ("INFO", Reply(ReplyKind.HELP)),
        ("I'll call them back", Reply(ReplyKind.OTHER)),
        ("CLAIM R-7K2QXX", Reply(ReplyKind.OTHER)),
        ("12", Reply(ReplyKind.OTHER)),
        ("", Reply(ReplyKind.OTHER)),
    ],
)
def test_a_reply_is_read_as_a_claim_a_keyword_or_nothing(body: str, reply: Reply) -> None:
    assert parse_reply(body) == reply


@given(st.text(max_size=200))
def test_any_text_is_read_without_error_and_a_named_reference_is_well_formed(body: str) -> None:
    reply = parse_reply(body)
    if reply.ref is not None:
        assert reply.kind == ReplyKind.CLAIM
        assert len(reply.ref) == 7 and reply.ref.startswith("R-") and reply.ref[2:].isalnum()


@dataclass
class Desk:
    session: Session
    settings: Settings
    form_object: dict[str, Any]
    services: Services = field(init=False)
    messenger: RecordingMessenger = field(default_factory=RecordingMessenger)

    def __post_init__(self) -> None:
        self.services = alert_services(self.settings, self.messenger)
        self.now = next_weekday_morning()

    def alerted_lead(self, entry_id: int = 1, minutes: float = 0, **fields: Any) -> Lead:
        """A new lead whose first alert was texted to the on-call person (Avery) at start + minutes."""
        if entry_id > 1:
            # Another person: another phone, email, name and device, so dedup keeps them apart.
            fields = {"3": f"(617) 555-01{50 + entry_id}", "2": f"p{entry_id}@example.org",
                      "1.3": ("Morgan", "Riley", "Quinn")[entry_id % 3], "ip": f"192.0.2.{50 + entry_id}",
                      "user_agent": f"Example/{entry_id}", **fields}
        ids = new_lead(self.session, self.settings, self.form_object, entry_id, **fields)
        deliver(self.session, ids[OutboxKind.STAFF_ALERT], self.services, now=self.now + timedelta(minutes=minutes))
        lead_id = self.session.get_one(OutboxMessage, ids[OutboxKind.STAFF_ALERT]).lead_id
        return self.session.get_one(Lead, lead_id)

    def reply(self, sender: str, body: str, minutes: float = 1) -> str | None:
        answer = answer_sms(self.session, self.services.roster, sender, body, self.now + timedelta(minutes=minutes))
        self.session.commit()
        return answer.text


@pytest.fixture
def desk(session: Session, settings: Settings, form_object: dict[str, Any]) -> Desk:
    return Desk(session, settings, form_object)


def test_replying_1_claims_the_lead_for_the_sender_and_stops_its_alerts(desk: Desk) -> None:
    lead = desk.alerted_lead()

    answer = desk.reply(AVERY, "1", minutes=2)

    assert answer == (f'Claimed {lead.ref} for you; no one else will be alerted. Call back now from CRM task '
                      f'"Callback {lead.ref}".')
    desk.session.refresh(lead)
    assert lead.status == LeadStatus.CLAIMED
    timer = desk.session.scalars(select(EscalationTimer)).one()
    assert timer.state == TimerState.DONE


def test_a_claim_records_the_speed_to_lead_times_and_the_claimer(desk: Desk) -> None:
    lead = desk.alerted_lead()

    desk.reply(AVERY, "YES", minutes=2)

    claim = desk.session.scalars(select(Claim)).one()
    first_alert = desk.session.scalars(select(StaffAlert)).one()
    assert (claim.lead_id, claim.staff_id, claim.staff_name, claim.staff_phone, claim.crm_owner_id, claim.channel) == (
        lead.id, "avery", "Avery Example", AVERY, "1001", "sms"
    )
    assert claim.submitted_at == lead.created_at
    assert claim.first_alert_at == first_alert.created_at == desk.now
    assert claim.claimed_at == desk.now + timedelta(minutes=2)
    assert claim.bridged_at is None


def test_a_claim_queues_the_crm_task_owner_update(desk: Desk) -> None:
    desk.alerted_lead()

    desk.reply(BLAKE, "CLAIM " + desk.session.scalars(select(Lead.ref)).one())

    row = desk.session.scalars(select(OutboxMessage).where(OutboxMessage.kind == OutboxKind.CRM_ASSIGN)).one()
    assert row.state == OutboxState.PENDING


def test_a_lead_someone_else_claimed_tells_the_sender_who_has_it(desk: Desk) -> None:
    lead = desk.alerted_lead()
    desk.reply(AVERY, "1")

    assert desk.reply(BLAKE, f"CLAIM {lead.ref}") == f"{lead.ref} is already claimed by Avery Example."
    assert desk.reply(AVERY, "CLAIM") == f'{lead.ref} is already yours. Call back from CRM task "Callback {lead.ref}".'
    assert len(desk.session.scalars(select(Claim)).all()) == 1


def test_replying_1_claims_the_latest_unclaimed_lead_alerted_to_the_sender(desk: Desk) -> None:
    older = desk.alerted_lead(1, minutes=0)
    newer = desk.alerted_lead(2, minutes=1)

    desk.reply(AVERY, "1", minutes=2)
    desk.reply(AVERY, "1", minutes=3)

    claims = {claim.lead_id: claim.claimed_at for claim in desk.session.scalars(select(Claim))}
    assert claims == {newer.id: desk.now + timedelta(minutes=2), older.id: desk.now + timedelta(minutes=3)}
    assert desk.reply(AVERY, "1", minutes=4) == f'{newer.ref} is already yours. Call back from CRM task "Callback ' \
        f'{newer.ref}".'


def test_replying_1_with_nothing_alerted_to_the_sender_explains_how_to_claim(desk: Desk) -> None:
    desk.alerted_lead()

    assert desk.reply(BLAKE, "1") == (
        "No callback request has been sent to you. To claim one, reply CLAIM and its reference."
    )
    assert desk.session.scalars(select(Claim)).all() == []


def test_an_unknown_reference_is_said_back_without_claiming(desk: Desk) -> None:
    desk.alerted_lead()

    assert desk.reply(AVERY, "CLAIM R-ZZZZZ") == "No callback request has reference R-ZZZZZ. Check the reference in " \
        "the alert."


def test_other_text_from_staff_gets_the_usage_and_help_gets_the_help_text(desk: Desk) -> None:
    desk.alerted_lead()

    assert desk.reply(AVERY, "on my way") == USAGE_TEXT
    assert desk.reply(AVERY, "HELP") == HELP_TEXT
    assert "STOP" in HELP_TEXT and len(HELP_TEXT) <= 320
    assert desk.session.scalars(select(Claim)).all() == []


def test_a_text_from_a_number_not_on_the_roster_is_ignored_and_logged_without_content(
    desk: Desk, caplog: pytest.LogCaptureFixture
) -> None:
    lead = desk.alerted_lead()
    caplog.clear()
    caplog.set_level(logging.INFO)

    assert desk.reply(NOT_STAFF, f"CLAIM {lead.ref} I need help with my drinking") is None

    assert desk.session.scalars(select(Claim)).all() == []
    assert "not on the roster" in caplog.text
    for private in ("drinking", NOT_STAFF, "5550142", lead.ref):
        assert private not in caplog.text


def test_stop_and_start_from_staff_get_no_answer_from_us_because_twilio_answers(
    desk: Desk, caplog: pytest.LogCaptureFixture
) -> None:
    assert desk.reply(AVERY, "STOP") is None
    assert "staff avery opted out" in caplog.text
    assert desk.reply(AVERY, "START") is None


def test_help_from_anyone_is_answered(desk: Desk) -> None:
    assert desk.reply(NOT_STAFF, "HELP") == HELP_TEXT


def test_two_staff_claiming_at_the_same_moment_leaves_exactly_one_winner(desk: Desk) -> None:
    lead = desk.alerted_lead()
    desk.session.commit()
    roster = desk.services.roster
    barrier = threading.Barrier(2)
    outcomes: dict[str, ClaimOutcome] = {}

    def claim_as(phone: str) -> None:
        staff = roster.staff_with_phone(phone)
        assert staff is not None
        with new_session() as own:
            barrier.wait()
            result = claim_lead(own, lead.id, staff, "sms", desk.now)
            own.commit()
            outcomes[phone] = result.outcome

    threads = [threading.Thread(target=claim_as, args=(phone,)) for phone in (AVERY, BLAKE)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert sorted(outcomes.values()) == [ClaimOutcome.CLAIMED, ClaimOutcome.TAKEN]
    assert len(desk.session.scalars(select(Claim)).all()) == 1


@dataclass
class OwnerRecordingCRM(LogOnlyCRM):
    created_owner: list[str | None] = field(default_factory=list)
    assigned: list[tuple[str, str]] = field(default_factory=list)

    def ensure_callback_task(self, contact_id: str, task: CallbackTaskSpec) -> str:
        self.created_owner.append(task.owner_id)
        return super().ensure_callback_task(contact_id, task)

    def assign_callback_task(self, task_id: str, owner_id: str) -> None:
        self.assigned.append((task_id, owner_id))


def test_a_claim_before_the_crm_task_exists_waits_for_it_and_the_task_is_created_for_the_claimer(
    session: Session, settings: Settings, form_object: dict[str, Any]
) -> None:
    crm = OwnerRecordingCRM()
    services = alert_services(settings, crm=crm)
    ids = new_lead(session, settings, form_object)
    now = next_weekday_morning()
    answer_sms(session, services.roster, BLAKE, "CLAIM " + session.scalars(select(Lead.ref)).one(), now)
    session.commit()
    assign = session.scalars(select(OutboxMessage).where(OutboxMessage.kind == OutboxKind.CRM_ASSIGN)).one()

    waiting = deliver(session, assign.id, services, now=now)
    assert waiting.state == OutboxState.PENDING
    assert session.get_one(OutboxMessage, assign.id).last_error == (
        f"lead {session.scalars(select(Lead.ref)).one()} has no CRM task yet; will retry after its CRM sync"
    )
    synced = deliver(session, ids[OutboxKind.CRM_SYNC], services, now=now)
    assigned = deliver(session, assign.id, services, now=now + timedelta(minutes=1))

    assert synced.state == assigned.state == OutboxState.DELIVERED
    assert crm.created_owner == ["1002"]
    assert crm.assigned == [(session.scalars(select(Lead.crm_task_id)).one(), "1002")]


HUBSPOT = "https://api.hubapi.com"


@responses.activate
def test_a_claim_gives_the_hubspot_task_to_the_claimers_owner(
    session: Session, settings: Settings, form_object: dict[str, Any]
) -> None:
    crm = HubSpotCRM("pat-test-token")
    services = alert_services(settings, crm=crm)
    ids = new_lead(session, settings, form_object)
    now = next_weekday_morning()
    responses.post(f"{HUBSPOT}/crm/v3/objects/contacts/search", json={"total": 0, "results": []})
    responses.post(f"{HUBSPOT}/crm/v3/objects/contacts", json={"id": "501", "properties": {}}, status=201)
    responses.post(f"{HUBSPOT}/crm/v3/objects/notes", json={"id": "601", "properties": {}}, status=201)
    responses.post(f"{HUBSPOT}/crm/v3/objects/tasks/search", json={"total": 0, "results": []})
    responses.post(f"{HUBSPOT}/crm/v3/objects/tasks", json={"id": "701", "properties": {}}, status=201)
    patch = responses.patch(f"{HUBSPOT}/crm/v3/objects/tasks/701", json={"id": "701", "properties": {}})
    assert deliver(session, ids[OutboxKind.CRM_SYNC], services, now=now).state == OutboxState.DELIVERED
    created = json.loads(responses.calls[-1].request.body or b"{}")
    assert created["properties"]["hubspot_owner_id"] == "1001"  # the on-call person, Monday morning

    answer_sms(session, services.roster, BLAKE, "CLAIM " + session.scalars(select(Lead.ref)).one(), now)
    session.commit()
    assign = session.scalars(select(OutboxMessage).where(OutboxMessage.kind == OutboxKind.CRM_ASSIGN)).one()
    result = deliver(session, assign.id, services, now=now)

    assert result.state == OutboxState.DELIVERED
    assert patch.call_count == 1
    request = patch.calls[0].request
    assert request.headers["Authorization"] == "Bearer pat-test-token"
    assert json.loads(request.body or b"{}") == {"properties": {"hubspot_owner_id": "1002"}}


@responses.activate
def test_hubspot_refusing_the_claimers_owner_id_parks_the_update_with_the_roster_fix(
    session: Session, settings: Settings, form_object: dict[str, Any]
) -> None:
    lead_ids = new_lead(session, settings, form_object)
    lead = session.get_one(Lead, session.get_one(OutboxMessage, lead_ids[OutboxKind.CRM_SYNC]).lead_id)
    lead.crm_task_id = "701"
    session.commit()
    services = alert_services(settings, crm=HubSpotCRM("pat-test-token"))
    answer_sms(session, services.roster, BLAKE, f"CLAIM {lead.ref}", next_weekday_morning())
    session.commit()
    responses.patch(f"{HUBSPOT}/crm/v3/objects/tasks/701", status=400, json={
        "status": "error", "category": "VALIDATION_ERROR", "message": "Property values were not valid",
        "errors": [{"message": "1002 is not a valid owner id", "context": {"propertyName": ["hubspot_owner_id"]}}],
    })
    assign = session.scalars(select(OutboxMessage).where(OutboxMessage.kind == OutboxKind.CRM_ASSIGN)).one()

    result = deliver(session, assign.id, services, now=next_weekday_morning())

    assert result.state == OutboxState.DEAD
    assert "fix owner ids in ROSTER_FILE" in (session.get_one(OutboxMessage, assign.id).last_error or "")
