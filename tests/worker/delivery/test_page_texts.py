"""A page's plain staff alerts are texted together, with the same exactly-once rule as one row's delivery."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from config.settings import Settings
from integrations.errors import InvalidRequest
from tests.worker.delivery.test_delivery_statements import counted
from tests.worker.delivery.test_hand_on import RecordingDispatcher, processed_page
from tests.worker.delivery.test_outbox import RecordingMessenger, services
from worker.delivery import page_texts
from worker.delivery.dispatch import send_texts
from worker.delivery.outbox import deliver
from worker.store.db import session_scope, utcnow
from worker.store.models import (
    EscalationTimer,
    Lead,
    LeadStatus,
    OutboxKind,
    OutboxMessage,
    OutboxState,
    StaffAlert,
)


def alerts_of(session: Session, outbox_ids: list[int]) -> list[int]:
    return sorted(session.scalars(select(OutboxMessage.id).where(
        OutboxMessage.id.in_(outbox_ids), OutboxMessage.kind == OutboxKind.STAFF_ALERT)))


def states(session: Session) -> dict[int, str]:
    return {row.id: row.state for row in session.scalars(
        select(OutboxMessage).where(OutboxMessage.kind == OutboxKind.STAFF_ALERT)
        .execution_options(populate_existing=True))}


def due_now(session: Session) -> None:
    """Time passes: every backoff and lease has run out."""
    session.execute(update(OutboxMessage).values(next_attempt_at=utcnow() - timedelta(seconds=1),
                                                 leased_until=None))
    session.commit()


@pytest.mark.services
@pytest.mark.parametrize("people", [1, 7])
def test_a_page_of_alerts_costs_the_same_statements_whatever_its_size(
    pg_settings: Settings, form_object: dict[str, Any], people: int
) -> None:
    messenger = RecordingMessenger()
    with session_scope() as session:
        alerts = alerts_of(session, processed_page(session, pg_settings, form_object, people))
        with counted(session) as counts:
            due_again = send_texts(alerts, services(pg_settings, messenger=messenger), RecordingDispatcher())
        assert due_again == [] and set(states(session).values()) == {OutboxState.DELIVERED}
    assert len(messenger.sent) == people
    # lease, read and the attempts before the texts; the answers, the timers and the rows delivered after
    assert counts == {"statements": 6, "commits": 2}


def test_each_text_of_a_page_is_recorded_as_one_sent_alone(
    session: Session, settings: Settings, form_object: dict[str, Any]
) -> None:
    alerts = alerts_of(session, processed_page(session, settings, form_object, 3))
    messenger = RecordingMessenger()
    on_call = services(settings).roster.on_call_staff(utcnow())[0]
    before = utcnow()

    send_texts(alerts, services(settings, messenger=messenger), RecordingDispatcher())

    attempts = session.scalars(select(StaffAlert).order_by(StaffAlert.outbox_id)).all()
    refs = {lead.id: lead.ref for lead in session.scalars(select(Lead))}
    assert [attempt.outbox_id for attempt in attempts] == alerts
    for attempt, (to, body) in zip(attempts, messenger.sent, strict=True):
        assert (attempt.status, attempt.staff_phone, attempt.staff_name) == ("queued", on_call.phone, on_call.name)
        assert attempt.provider_id is not None and attempt.body == body and to == on_call.phone
        assert refs[attempt.lead_id] in body and "Sample" not in body and "example.org" not in body
    timers = session.scalars(select(EscalationTimer)).all()
    reminder = timedelta(minutes=settings.alert_reminder_minutes)
    assert sorted(timer.outbox_id for timer in timers) == alerts
    assert all(before + reminder <= timer.due_at <= utcnow() + reminder for timer in timers)
    assert {timer.waiting_sms_sid for timer in timers} == {attempt.provider_id for attempt in attempts}


def test_a_text_whose_answer_was_lost_is_looked_up_before_it_is_sent_again(
    session: Session, settings: Settings, form_object: dict[str, Any]
) -> None:
    [alert] = alerts_of(session, processed_page(session, settings, form_object, 1))
    messenger = RecordingMessenger(lose_answers=1)

    [(due, retry_in)] = send_texts([alert], services(settings, messenger=messenger), RecordingDispatcher())
    assert due == alert and retry_in > timedelta(0)
    assert session.scalars(select(StaffAlert.status)).all() == ["sending"]

    due_now(session)
    assert deliver(session, alert, services(settings, messenger=messenger)).state == OutboxState.DELIVERED
    assert len(messenger.sent) == 1 and messenger.lookups == 1


def test_texts_whose_outcome_the_database_lost_stay_in_doubt_and_are_not_sent_twice(
    session: Session, settings: Settings, form_object: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    alerts = alerts_of(session, processed_page(session, settings, form_object, 2))
    messenger = RecordingMessenger()

    def database_gone(*_: Any) -> None:
        raise OperationalError("UPDATE staff_alerts", {}, Exception("server closed the connection"))

    monkeypatch.setattr(page_texts, "_record", database_gone)
    send_texts(alerts, services(settings, messenger=messenger), RecordingDispatcher())
    monkeypatch.undo()
    assert len(messenger.sent) == 2 and set(states(session).values()) == {OutboxState.PENDING}

    due_now(session)  # the leases ran out; the sweeper offers the rows again
    send_texts(alerts, services(settings, messenger=messenger), RecordingDispatcher())
    assert len(messenger.sent) == 2 and messenger.lookups == 2
    assert set(states(session).values()) == {OutboxState.DELIVERED}


def test_a_claimed_lead_is_left_to_the_one_by_one_path_which_sends_it_nothing(
    session: Session, settings: Settings, form_object: dict[str, Any]
) -> None:
    alerts = alerts_of(session, processed_page(session, settings, form_object, 3))
    claimed = session.scalars(select(OutboxMessage.lead_id).where(OutboxMessage.id == alerts[1])).one()
    session.execute(update(Lead).where(Lead.id == claimed).values(status=LeadStatus.CLAIMED))
    session.commit()
    messenger = RecordingMessenger()

    with session_scope() as other:
        page = page_texts.text_page(other, alerts, services(settings, messenger=messenger), utcnow(), senders=4,
                                    until=float("inf"))
    assert page.left == [alerts[1]] and sorted(page.delivered) == [alerts[0], alerts[2]]

    send_texts(page.left, services(settings, messenger=messenger), RecordingDispatcher())
    assert len(messenger.sent) == 2
    assert session.scalars(select(StaffAlert.lead_id).where(StaffAlert.lead_id == claimed)).all() == []


def test_a_text_refused_for_good_calls_the_on_call_person_now_and_the_others_go_out(
    session: Session, settings: Settings, form_object: dict[str, Any]
) -> None:
    alerts = alerts_of(session, processed_page(session, settings, form_object, 2))
    messenger = RecordingMessenger(failures=[InvalidRequest("Twilio refused the staff number (HTTP 400)")])
    started = utcnow()

    send_texts(alerts, services(settings, messenger=messenger), RecordingDispatcher())

    by_state = states(session)
    assert sorted(by_state.values()) == [OutboxState.DEAD, OutboxState.DELIVERED] and len(messenger.sent) == 1
    [refused] = [outbox_id for outbox_id, state in by_state.items() if state == OutboxState.DEAD]
    assert session.scalars(select(StaffAlert.status).where(StaffAlert.outbox_id == refused)).all() == ["failed"]
    timer = session.scalars(select(EscalationTimer).where(EscalationTimer.outbox_id == refused)).one()
    assert timer.due_at <= utcnow() and timer.due_at >= started - timedelta(seconds=1)


def test_texts_not_started_in_time_are_taken_back_unsent(
    session: Session, settings: Settings, form_object: dict[str, Any]
) -> None:
    alerts = alerts_of(session, processed_page(session, settings, form_object, 2))
    messenger = RecordingMessenger()

    with session_scope() as other:
        page = page_texts.text_page(other, alerts, services(settings, messenger=messenger), utcnow(), senders=2,
                                    until=0.0)

    assert sorted(page.late) == alerts and messenger.sent == []
    assert session.scalars(select(StaffAlert)).all() == [], "no attempt left in doubt for a text never sent"
    assert deliver(session, alerts[0], services(settings, messenger=messenger)).state == OutboxState.DELIVERED
    assert messenger.lookups == 0, "free to take at once, and sent without a look-up"
