from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from config.settings import Settings
from integrations.errors import IntegrationError, ServiceUnavailable
from tests.fakes.admissions import AVERY, BLAKE, DANA, alert_services, new_lead, next_weekday_morning, twilio_settings
from tests.fakes.twilio import PUBLIC_URL, RecordingMessenger
from worker.delivery.outbox import deliver
from worker.staff.alerts import start_escalation
from worker.staff.claims import claim_lead
from worker.staff.escalation import escalate, lease_due_timers, record_call_status, record_message_status
from worker.staff.services import Services
from worker.staff.templates import spoken_ref
from worker.staff.voice import reminder_twiml
from worker.store.models import EscalationTimer, Lead, OutboxKind, OutboxMessage, OutboxState, StaffAlert, TimerState

MINUTE = timedelta(minutes=1)


class Desk:
    """One lead on the example roster's weekday day shift, with time moved by hand."""

    def __init__(self, session: Session, settings: Settings, form_object: dict[str, Any], **overrides: Any) -> None:
        self.session = session
        self.messenger = RecordingMessenger()
        self.services: Services = alert_services(twilio_settings(settings, **overrides), self.messenger)
        self.start = next_weekday_morning()
        self.ids = new_lead(session, settings, form_object, **{"1.3": "Zebulonia", "3": "(617) 555-0199"})

    def alert(self) -> OutboxState | None:
        return deliver(self.session, self.ids[OutboxKind.STAFF_ALERT], self.services, now=self.start).state

    def at(self, minutes: float) -> datetime:
        return self.start + timedelta(minutes=minutes)

    def tick(self, minutes: float) -> list[int]:
        """What the beat task does at start + minutes: lease the due timers and take each one's step."""
        now = self.at(minutes)
        due = lease_due_timers(self.session, now)
        for timer_id in due:
            escalate(self.session, timer_id, self.services, now)
        return due

    @property
    def timer(self) -> EscalationTimer:
        return self.session.scalars(select(EscalationTimer)).one()

    @property
    def lead(self) -> Lead:
        return self.session.scalars(select(Lead)).one()


@pytest.fixture
def desk(session: Session, settings: Settings, form_object: dict[str, Any]) -> Desk:
    return Desk(session, settings, form_object)


def test_a_new_lead_texts_the_on_call_person_and_sets_a_reminder_five_minutes_out(desk: Desk) -> None:
    assert desk.alert() == OutboxState.DELIVERED

    [(to, body)] = desk.messenger.texts
    assert to == AVERY
    assert body == (f"admitflow: New confidential callback request {desk.lead.ref}. Reply 1 to claim it, then call "
                    f'back now (CRM task "Callback {desk.lead.ref}").')
    timer = desk.timer
    assert (timer.step, timer.state, timer.due_at) == (0, TimerState.PENDING, desk.at(5))
    assert timer.waiting_sms_sid == "SM" + "1".zfill(32)


def test_nothing_happens_before_the_reminder_is_due(desk: Desk) -> None:
    desk.alert()

    assert desk.tick(4.9) == []
    assert desk.messenger.calls == []


def test_unclaimed_after_five_minutes_the_on_call_person_gets_a_voice_reminder(desk: Desk) -> None:
    desk.alert()

    assert len(desk.tick(5)) == 1

    assert desk.messenger.call_recipients == [AVERY] and len(desk.messenger.texts) == 1
    call = desk.session.scalars(select(StaffAlert).where(StaffAlert.channel == "voice")).one()
    assert desk.messenger.calls[0][1] == f"{PUBLIC_URL}/hooks/twilio/voice/reminder?alert={call.id}"
    assert call.body == ("There is an unclaimed confidential callback request, reference "
                         f"{spoken_ref(desk.lead.ref)}. Press 1 to claim it and connect now.")
    assert (call.status, call.provider_id, call.staff_name) == ("queued", "CA" + "1".zfill(32), "Avery Example")
    assert (desk.timer.step, desk.timer.due_at, desk.timer.waiting_call_sid) == (1, desk.at(10), call.provider_id)


def test_still_unclaimed_it_climbs_the_ladder_then_keeps_reminding_the_supervisor(desk: Desk) -> None:
    desk.alert()
    for minutes in (5, 10, 15, 25, 35):
        desk.tick(minutes)

    assert desk.messenger.text_recipients == [AVERY, BLAKE, DANA, DANA, DANA]
    assert desk.messenger.call_recipients == [AVERY, BLAKE, DANA, DANA, DANA]
    escalation_text = desk.messenger.texts[1][1]
    assert escalation_text.startswith("admitflow: UNCLAIMED for ")
    assert f"confidential callback request {desk.lead.ref}. Reply 1 to claim it" in escalation_text
    assert desk.timer.due_at == desk.at(45)


def test_the_supervisor_is_not_reminded_before_the_top_repeat_interval(desk: Desk) -> None:
    desk.alert()
    for minutes in (5, 10, 15):
        desk.tick(minutes)

    assert desk.tick(24) == []
    assert desk.messenger.call_recipients == [AVERY, BLAKE, DANA]


def test_no_alert_call_or_text_contains_the_persons_details(desk: Desk, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    desk.alert()
    for minutes in (5, 10, 15):
        desk.tick(minutes)

    said = [body for body in desk.session.scalars(select(StaffAlert.body))]
    assert len(said) == 6
    for phi in ("Zebulonia", "Sample", "5550199", "555-0199", "jordan", "treatment"):
        assert all(phi not in text for text in [*said, caplog.text])


def test_a_claimed_lead_is_never_reminded_or_escalated(desk: Desk) -> None:
    desk.alert()
    staff = desk.services.roster.staff_with_phone(BLAKE)
    assert staff is not None
    claim_lead(desk.session, desk.lead.id, staff, "sms", desk.at(3))
    desk.session.commit()

    assert desk.tick(5) == [] and desk.tick(60) == []
    assert desk.messenger.calls == [] and len(desk.messenger.texts) == 1
    assert desk.timer.state == TimerState.DONE


def test_a_lead_claimed_after_its_timer_was_taken_is_not_called(desk: Desk) -> None:
    desk.alert()
    [timer_id] = lease_due_timers(desk.session, desk.at(5))
    staff = desk.services.roster.staff_with_phone(AVERY)
    assert staff is not None
    claim_lead(desk.session, desk.lead.id, staff, "sms", desk.at(5))
    desk.session.commit()

    escalate(desk.session, timer_id, desk.services, desk.at(5))

    assert desk.messenger.calls == [] and desk.timer.state == TimerState.DONE


def test_a_timer_being_worked_on_is_not_taken_again_until_its_lease_runs_out(desk: Desk) -> None:
    desk.alert()

    first = lease_due_timers(desk.session, desk.at(5))

    assert len(first) == 1
    assert lease_due_timers(desk.session, desk.at(6)) == []
    assert lease_due_timers(desk.session, desk.at(7.1)) == first  # the worker that took it died


def test_an_undelivered_alert_text_makes_the_reminder_call_due_at_once(desk: Desk) -> None:
    desk.alert()
    sid = desk.timer.waiting_sms_sid
    assert sid is not None

    record_message_status(desk.session, sid, "undelivered", "30003", desk.at(1))
    desk.session.commit()

    text = desk.session.scalars(select(StaffAlert)).one()
    assert text.status == "undelivered" and text.error is not None and "30003" in text.error
    assert desk.timer.due_at == desk.at(1)
    desk.tick(1)
    assert desk.messenger.call_recipients == [AVERY]


def test_delivery_reports_arriving_out_of_order_never_go_backwards(desk: Desk) -> None:
    desk.alert()
    sid = desk.timer.waiting_sms_sid
    assert sid is not None

    for status in ("delivered", "sent", "queued"):
        record_message_status(desk.session, sid, status, None, desk.at(1))

    assert desk.session.scalars(select(StaffAlert)).one().status == "delivered"
    assert desk.timer.due_at == desk.at(5)


@pytest.mark.parametrize("status", ["no-answer", "busy", "failed", "canceled"])
def test_an_unanswered_reminder_call_goes_to_the_next_person_at_once(desk: Desk, status: str) -> None:
    desk.alert()
    desk.tick(5)
    call_sid = desk.timer.waiting_call_sid
    assert call_sid is not None

    record_call_status(desk.session, call_sid, status, desk.at(5.5))
    desk.session.commit()
    desk.tick(5.5)

    assert desk.messenger.call_recipients == [AVERY, BLAKE]
    assert desk.messenger.text_recipients == [AVERY, BLAKE]
    call = desk.session.scalars(select(StaffAlert).where(StaffAlert.provider_id == call_sid)).one()
    assert call.status == status


def test_an_answered_reminder_call_leaves_the_timer_as_it_was(desk: Desk) -> None:
    desk.alert()
    desk.tick(5)
    call_sid = desk.timer.waiting_call_sid
    assert call_sid is not None

    record_call_status(desk.session, call_sid, "completed", desk.at(6))

    assert desk.timer.due_at == desk.at(10)


def test_an_undelivered_escalation_text_waits_for_the_call_of_the_same_step(desk: Desk) -> None:
    desk.alert()
    desk.tick(5)
    desk.tick(10)
    sms_sid = desk.timer.waiting_sms_sid
    assert sms_sid is not None

    record_message_status(desk.session, sms_sid, "failed", "30006", desk.at(10.5))

    assert desk.timer.due_at == desk.at(15) and desk.timer.waiting_sms_sid is None


def test_an_alert_text_that_can_never_arrive_calls_the_on_call_person_at_once(desk: Desk) -> None:
    opted_out = IntegrationError("Twilio 21610: the staff number ending in 01 replied STOP", permanent=True)
    desk.messenger.sms_failures.append(opted_out)

    assert desk.alert() == OutboxState.DEAD

    assert desk.timer.due_at == desk.start
    desk.tick(0)
    assert desk.messenger.call_recipients == [AVERY]


def test_when_twilio_is_down_the_same_step_is_tried_again_a_minute_later(desk: Desk) -> None:
    desk.alert()
    desk.messenger.call_failures.append(ServiceUnavailable("Twilio answered 503; will retry"))

    desk.tick(5)

    timer = desk.timer
    assert (timer.step, timer.due_at, timer.last_error) == (0, desk.at(6), "Twilio answered 503; will retry")
    desk.tick(6)
    assert desk.messenger.call_recipients == [AVERY] and desk.timer.step == 1


def test_a_staff_phone_that_cannot_take_calls_moves_to_the_next_person_at_once(desk: Desk) -> None:
    desk.alert()
    desk.messenger.call_failures.append(IntegrationError("Twilio 21217: not a valid number", permanent=True))

    desk.tick(5)

    assert (desk.timer.step, desk.timer.due_at) == (1, desk.at(5))
    desk.tick(5)
    assert desk.messenger.call_recipients == [BLAKE]


def test_without_a_public_url_reminder_calls_fail_with_the_fix_and_texts_still_climb_the_ladder(
    session: Session, settings: Settings, form_object: dict[str, Any]
) -> None:
    desk = Desk(session, settings, form_object, public_url=None)
    desk.alert()

    desk.tick(5)
    desk.tick(5)

    assert desk.messenger.calls == [] and desk.messenger.text_recipients == [AVERY, BLAKE]
    failed = session.scalars(select(StaffAlert).where(StaffAlert.channel == "voice")).all()
    assert [alert.status for alert in failed] == ["failed", "failed"]
    assert failed[0].error is not None and "ADMITFLOW_PUBLIC_URL" in failed[0].error
    assert desk.timer.due_at == desk.at(10)


def test_a_repeat_alert_never_pushes_a_reminder_back_but_can_bring_it_forward(desk: Desk) -> None:
    desk.alert()
    lead_id, outbox_id = desk.lead.id, desk.ids[OutboxKind.STAFF_ALERT]

    start_escalation(desk.session, lead_id, outbox_id, due_at=desk.at(9), now=desk.at(4))
    assert desk.timer.due_at == desk.at(5)
    start_escalation(desk.session, lead_id, outbox_id, due_at=desk.at(4), now=desk.at(4))
    assert desk.timer.due_at == desk.at(4)


def test_a_lead_claimed_before_its_alert_goes_out_gets_no_text(desk: Desk) -> None:
    staff = desk.services.roster.staff_with_phone(AVERY)
    assert staff is not None
    claim_lead(desk.session, desk.lead.id, staff, "sms", desk.at(0))
    desk.session.commit()

    assert desk.alert() == OutboxState.DELIVERED

    assert desk.messenger.texts == []
    assert desk.session.scalars(select(EscalationTimer)).all() == []
    row = desk.session.get_one(OutboxMessage, desk.ids[OutboxKind.STAFF_ALERT])
    assert row.state == OutboxState.DELIVERED


def said_nothing_and_hung_up(document: str) -> bool:
    return document.endswith("<Response><Hangup /></Response>")


@pytest.mark.parametrize("answered_by", ["machine_start", "machine_end_beep", "fax"])
def test_a_reminder_call_a_voicemail_answered_hangs_up_and_moves_to_the_next_person_at_once(
    desk: Desk, answered_by: str
) -> None:
    desk.alert()
    desk.tick(5)
    call = desk.session.scalars(select(StaffAlert).where(StaffAlert.channel == "voice")).one()

    document = reminder_twiml(desk.session, call.id, desk.services, desk.at(5.1), answered_by)
    desk.session.commit()

    assert said_nothing_and_hung_up(document)
    assert desk.session.get_one(StaffAlert, call.id).status == "machine"
    assert desk.timer.due_at == desk.at(5.1), "not five more minutes: the reminder reached nobody"
    desk.tick(5.2)
    assert desk.messenger.call_recipients == [AVERY, BLAKE] and desk.messenger.text_recipients == [AVERY, BLAKE]


def test_a_status_callback_saying_a_machine_answered_moves_the_lead_on_like_an_unanswered_call(desk: Desk) -> None:
    desk.alert()
    desk.tick(5)

    record_call_status(desk.session, desk.timer.waiting_call_sid or "", "completed", desk.at(5.5), "machine_end_beep")
    desk.session.commit()

    assert desk.timer.due_at == desk.at(5.5) and desk.timer.waiting_call_sid is None


@pytest.mark.parametrize("answered_by", ["human", "unknown", None])
def test_a_reminder_a_person_or_an_undecided_detection_answered_plays_the_prompt(
    desk: Desk, answered_by: str | None
) -> None:
    desk.alert()
    desk.tick(5)
    call = desk.session.scalars(select(StaffAlert).where(StaffAlert.channel == "voice")).one()

    document = reminder_twiml(desk.session, call.id, desk.services, desk.at(5.1), answered_by)

    assert "<Gather" in document and spoken_ref(desk.lead.ref) in document
    assert desk.timer.due_at == desk.at(10)
def test_a_reminder_call_twilio_placed_but_whose_answer_was_lost_is_found_and_not_rung_again(desk: Desk) -> None:
    desk.alert()
    desk.messenger.lost_call_answers = 1

    desk.tick(5)

    assert desk.messenger.call_recipients == [AVERY], "one call"
    call = desk.session.scalars(select(StaffAlert).where(StaffAlert.channel == "voice")).one()
    assert (call.status, call.provider_id) == ("completed", "CA" + "1".zfill(32))
    timer = desk.timer
    assert timer.step == 1 and timer.waiting_call_sid == call.provider_id, "the ladder moves on at once"
    desk.tick(6)
    assert desk.messenger.call_recipients == [AVERY]


def test_an_escalation_text_twilio_sent_but_whose_answer_was_lost_is_recorded_with_its_sid(desk: Desk) -> None:
    desk.alert()
    desk.tick(5)
    desk.messenger.lost_sms_answers = 1

    desk.tick(10)

    escalation = desk.session.scalars(select(StaffAlert).where(StaffAlert.channel == "sms")
                                      .order_by(StaffAlert.id.desc())).first()
    assert escalation is not None and escalation.status != "failed" and escalation.provider_id is not None
    assert escalation.escalation_step == "claim-1-0"
    assert len(desk.messenger.texts) == 2, "the alert and one escalation text"


def test_a_step_whose_answers_could_not_be_checked_waits_rather_than_ringing_twice(desk: Desk) -> None:
    desk.alert()
    desk.messenger.call_failures = [ServiceUnavailable("Twilio answered 503; will retry")]
    desk.tick(5)
    assert desk.timer.step == 0 and desk.messenger.calls == []
    attempt = desk.session.scalars(select(StaffAlert).where(StaffAlert.channel == "voice")).one()
    assert attempt.status == "calling", "a 503 does not prove the call was not placed"

    desk.tick(6)

    assert desk.messenger.call_recipients == [AVERY], "looked up first, found nothing, then placed once"
    assert desk.timer.step == 1
