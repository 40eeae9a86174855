from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from config.settings import Settings
from tests.fakes.admissions import AVERY, alert_services, new_lead, next_weekday_morning, twilio_settings
from tests.fakes.twilio import CENTER_NUMBER, RecordingMessenger
from worker.delivery.outbox import deliver
from worker.staff.callbacks import after_wait
from worker.staff.escalation import escalate, lease_due_timers, record_call_status
from worker.staff.services import Services
from worker.staff.templates import spoken_ref
from worker.staff.voice import dial_status_twiml, keypress_twiml, reminder_twiml
from worker.store.models import (
    Claim,
    EscalationTimer,
    Lead,
    OutboxKind,
    OutboxMessage,
    StaffAlert,
    TimerPurpose,
    TimerState,
)

NEW_YORK = ZoneInfo("America/New_York")
PERSON = "+16175550199"


def said(document: str) -> str:
    root = ET.fromstring(document)  # noqa: S314 (our own TwiML)
    return " ".join(element.text or "" for element in root.iter("Say"))


@pytest.mark.parametrize(
    ("step", "now", "expected"),
    [
        ("15m", datetime(2026, 11, 23, 15, 0, tzinfo=UTC), datetime(2026, 11, 23, 15, 15, tzinfo=UTC)),
        ("2h", datetime(2026, 11, 23, 15, 0, tzinfo=UTC), datetime(2026, 11, 23, 17, 0, tzinfo=UTC)),
        ("morning", datetime(2026, 11, 23, 12, 0, tzinfo=UTC), datetime(2026, 11, 23, 9, 0, tzinfo=NEW_YORK)),
        ("morning", datetime(2026, 11, 23, 15, 0, tzinfo=UTC), datetime(2026, 11, 24, 9, 0, tzinfo=NEW_YORK)),
        ("morning", datetime(2026, 3, 8, 3, 0, tzinfo=UTC), datetime(2026, 3, 8, 9, 0, tzinfo=NEW_YORK)),
        ("morning", datetime(2026, 3, 7, 20, 0, tzinfo=UTC), datetime(2026, 3, 8, 9, 0, tzinfo=NEW_YORK)),
    ],
)
def test_each_wait_of_the_cadence_lands_on_the_centers_clock(step: str, now: datetime, expected: datetime) -> None:
    assert after_wait(step, now, NEW_YORK, 9) == expected


class Bridge:
    """A lead claimed by Avery pressing 1 on the reminder call, bridged to the person; time moved by hand."""

    def __init__(self, session: Session, settings: Settings, form_object: dict[str, Any], **overrides: Any) -> None:
        self.session = session
        self.messenger = RecordingMessenger()
        self.services: Services = alert_services(twilio_settings(settings, **overrides), self.messenger)
        self.start = next_weekday_morning()  # Monday 10:00 in New York
        ids = new_lead(session, settings, form_object, **{"3": "(617) 555-0199"})
        deliver(session, ids[OutboxKind.STAFF_ALERT], self.services, now=self.start)
        self.tick(5)
        document, _ = keypress_twiml(session, self.alerts("voice")[0].id, "1", self.services, self.at(6))
        session.commit()
        assert "<Number>" + PERSON in document
        self.claim = session.scalars(select(Claim)).one()

    def at(self, minutes: float) -> datetime:
        return self.start + timedelta(minutes=minutes)

    def tick(self, minutes: float) -> None:
        for timer_id in lease_due_timers(self.session, self.at(minutes)):
            escalate(self.session, timer_id, self.services, self.at(minutes))

    def dial_ended(self, status: str, minutes: float) -> str:
        document = dial_status_twiml(self.session, self.claim.id, status, "0", "CA99", self.services, self.at(minutes))
        self.session.commit()
        return said(document)

    def alerts(self, channel: str) -> list[StaffAlert]:
        return list(self.session.scalars(select(StaffAlert).where(StaffAlert.channel == channel)
                                         .order_by(StaffAlert.id)))

    @property
    def timer(self) -> EscalationTimer:
        return self.session.scalars(select(EscalationTimer)).one()


@pytest.fixture
def bridge(session: Session, settings: Settings, form_object: dict[str, Any]) -> Bridge:
    return Bridge(session, settings, form_object)


def test_a_bridged_call_with_no_answer_schedules_the_next_attempt_on_the_cadence(bridge: Bridge) -> None:
    spoken = bridge.dial_ended("no-answer", 7)

    assert spoken == "The caller did not answer. You will get a call to try again at 10:22 AM. Goodbye."
    timer = bridge.timer
    assert (timer.purpose, timer.state, timer.due_at, timer.callback_attempts) == (
        TimerPurpose.CALLBACK, TimerState.PENDING, bridge.at(22), 1
    )
    assert bridge.claim.bridge_status == "no-answer" and bridge.claim.bridged_at is None


def test_when_the_attempt_is_due_the_claimer_is_called_and_one_key_connects_them_again(bridge: Bridge) -> None:
    bridge.dial_ended("busy", 7)
    bridge.tick(21)
    assert bridge.messenger.call_recipients == [AVERY]

    bridge.tick(22)

    assert bridge.messenger.call_recipients == [AVERY, AVERY]
    callback_call = bridge.alerts("voice")[-1]
    prompt = said(reminder_twiml(bridge.session, callback_call.id, bridge.services, bridge.at(22.5)))
    ref = bridge.session.scalars(select(Lead.ref)).one()
    assert prompt.startswith(f"Time to try the callback for reference {spoken_ref(ref)} again.")
    assert prompt.count("Press 1 to connect now.") == 2
    document, _ = keypress_twiml(bridge.session, callback_call.id, "1", bridge.services, bridge.at(23))
    root = ET.fromstring(document)  # noqa: S314 (our own TwiML)
    dial = root.find("Dial")
    assert dial is not None and dial.attrib["callerId"] == CENTER_NUMBER and dial.findtext("Number") == PERSON


def test_the_cadence_runs_fifteen_minutes_two_hours_next_morning_then_stops(bridge: Bridge) -> None:
    assert "try again at 10:22 AM" in bridge.dial_ended("no-answer", 7)
    assert "try again at 12:30 PM" in bridge.dial_ended("no-answer", 30)
    assert "try again on Tuesday at 9:00 AM" in bridge.dial_ended("failed", 150)

    last = bridge.dial_ended("no-answer", 24 * 60)

    assert last == ("The caller did not answer, and that was the last scheduled attempt. The callback stays with "
                    "you in the CRM task. Goodbye.")
    assert (bridge.timer.state, bridge.timer.callback_attempts) == (TimerState.DONE, 4)


def test_a_bridged_call_that_connects_ends_the_call_backs_and_is_recorded(bridge: Bridge) -> None:
    bridge.dial_ended("no-answer", 7)

    spoken = said(dial_status_twiml(bridge.session, bridge.claim.id, "completed", "95", "CA100", bridge.services,
                                    bridge.at(23)))
    bridge.session.commit()
    bridge.tick(60)

    assert "logged in the CRM" in spoken
    claim = bridge.session.get_one(Claim, bridge.claim.id)
    call_logs = bridge.session.scalars(select(OutboxMessage).where(OutboxMessage.kind == OutboxKind.CRM_CALL_LOG))
    assert [row.lead_id for row in call_logs] == [claim.lead_id]
    assert (claim.bridge_status, claim.bridge_seconds, claim.bridged_at) == (
        "completed", 95, bridge.at(23) - timedelta(seconds=95)
    )
    assert bridge.timer.state == TimerState.DONE
    assert bridge.messenger.call_recipients == [AVERY]


def test_unanswered_call_back_reminders_are_repeated_three_times_then_left_to_the_crm_task(
    bridge: Bridge, caplog: pytest.LogCaptureFixture
) -> None:
    bridge.dial_ended("no-answer", 7)
    for minutes in (22, 27, 32, 37, 42):
        bridge.tick(minutes)

    assert bridge.messenger.call_recipients == [AVERY] * 4
    assert bridge.timer.state == TimerState.DONE
    assert "3 call-back reminders to staff avery went unanswered" in caplog.text


def test_an_empty_cadence_means_no_retries(session: Session, settings: Settings, form_object: dict[str, Any]) -> None:
    bridge = Bridge(session, settings, form_object, callback_cadence="")

    assert "that was the last scheduled attempt" in bridge.dial_ended("no-answer", 7)
    assert bridge.timer.state == TimerState.DONE


def test_an_unanswered_call_back_reminder_is_repeated_later_not_at_once(bridge: Bridge) -> None:
    bridge.dial_ended("no-answer", 7)
    bridge.tick(22)
    sid = bridge.timer.waiting_call_sid
    assert sid is not None

    record_call_status(bridge.session, sid, "no-answer", bridge.at(22.5))

    assert bridge.timer.due_at == bridge.at(27)


def test_a_claimer_called_again_after_a_completed_bridge_hears_it_is_theirs_and_done_not_claimed_by_themselves(
    bridge: Bridge
) -> None:
    bridge.dial_ended("completed", 7)

    spoken = said(reminder_twiml(bridge.session, bridge.alerts("voice")[0].id, bridge.services, bridge.at(8)))

    ref = bridge.session.scalars(select(Lead.ref)).one()
    assert spoken == (f"Reference {spoken_ref(ref)} is yours, and your call with the person was completed. Nothing "
                      "more is needed. Goodbye.")
    assert "already claimed" not in spoken


def test_a_call_back_reminder_without_a_key_press_does_not_call_the_claimed_lead_unclaimed(bridge: Bridge) -> None:
    bridge.dial_ended("busy", 7)
    bridge.tick(22)

    document = reminder_twiml(bridge.session, bridge.alerts("voice")[-1].id, bridge.services, bridge.at(22.5))

    root = ET.fromstring(document)  # noqa: S314 (our own TwiML)
    after_gather = " ".join(element.text or "" for element in root.findall("Say"))
    assert "unclaimed" not in after_gather
    assert after_gather == ("No key was pressed. The callback is still yours; you will be called again to try it. "
                            "Goodbye.")
