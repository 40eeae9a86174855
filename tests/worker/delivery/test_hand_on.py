"""A processed page's texts are sent by the task that processed it, side by side; its CRM work goes to the broker."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from config.settings import Settings
from integrations.messaging import SentMessage
from tests.conftest import make_entry
from tests.worker.delivery.test_crm_batches import BatchingCRM
from tests.worker.delivery.test_outbox import RecordingMessenger, services
from worker.delivery import dispatch
from worker.delivery.dispatch import hand_on
from worker.intake.entries import register_form, store_entries
from worker.leads.processing import process_submissions
from worker.store.db import utcnow
from worker.store.models import OutboxKind, OutboxMessage, OutboxState, SubmissionSource


@dataclass
class RecordingDispatcher:
    ready: list[int] = field(default_factory=list)
    crm: list[int] = field(default_factory=list)  # sent to the CRM's own queue
    lingering: dict[int, float] = field(default_factory=dict)  # of those, sent to wait that many seconds first

    def submission_stored(self, submission_id: int) -> None:
        raise AssertionError("not expected")

    def submissions_stored(self, submission_ids: list[int]) -> None:
        raise AssertionError("not expected")

    def outbox_ready(self, outbox_ids: Iterable[int]) -> None:
        self.ready.extend(outbox_ids)

    def crm_ready(self, outbox_ids: Iterable[int], *, linger: float = 0.0) -> None:
        for outbox_id in outbox_ids:
            self.crm.append(outbox_id)
            if linger:
                self.lingering[outbox_id] = linger


def processed_page(session: Session, settings: Settings, form_object: dict[str, Any], people: int) -> list[int]:
    register_form(session, site=settings.site, form_object=form_object)
    entries = [make_entry(n, ip=f"2001:db8::{n:x}", **{"2": f"person{n}@example.org", "3": f"+1617555{n:04d}",
                                                       "1.6": "Sample" + "x" * n})
               for n in range(1, people + 1)]
    stored = store_entries(session, site=settings.site, entries=entries, source=SubmissionSource.CLI)
    session.commit()
    outcomes = process_submissions(session, [each.submission_id for each in stored], settings)
    session.commit()
    return [outbox_id for outcome in outcomes for outbox_id in outcome.outbox_ids]


def kinds(session: Session) -> dict[int, str]:
    return {row.id: row.kind for row in session.scalars(select(OutboxMessage))}


@dataclass
class SlowMessenger(RecordingMessenger):
    """Twilio taking a moment to answer each text; counts how many were being sent at once."""

    sending: int = 0
    most_at_once: int = 0
    guard: threading.Lock = field(default_factory=threading.Lock)

    def send_sms(self, to: str, body: str) -> SentMessage:
        with self.guard:
            self.sending += 1
            self.most_at_once = max(self.most_at_once, self.sending)
        time.sleep(0.2)
        with self.guard:
            self.sending -= 1
            return super().send_sms(to, body)


def test_a_pages_staff_alerts_are_texted_at_once_side_by_side_and_its_crm_syncs_go_to_the_crm_queue(
    session: Session, settings: Settings, form_object: dict[str, Any]
) -> None:
    outbox_ids = processed_page(session, settings, form_object, 3)
    messenger, broker = SlowMessenger(), RecordingDispatcher()

    due_again = hand_on(outbox_ids, services(settings, messenger=messenger), broker)

    kind_of = kinds(session)
    assert due_again == [] and len(messenger.sent) == 3
    assert messenger.most_at_once == 3  # not one after another
    assert broker.ready == []
    assert sorted(broker.crm) == sorted(i for i in outbox_ids if kind_of[i] == OutboxKind.CRM_SYNC)
    assert broker.lingering == {}, "a CRM that takes no batches has nothing to wait for"
    delivered = session.scalars(select(OutboxMessage).where(OutboxMessage.kind == OutboxKind.STAFF_ALERT)
                                .execution_options(populate_existing=True)).all()
    assert {row.state for row in delivered} == {OutboxState.DELIVERED}


def test_a_pages_crm_syncs_for_a_crm_that_takes_batches_wait_in_the_broker_for_company(
    session: Session, settings: Settings, form_object: dict[str, Any]
) -> None:
    outbox_ids = processed_page(session, settings, form_object, 3)
    broker = RecordingDispatcher()

    hand_on(outbox_ids, services(settings, crm=BatchingCRM()), broker)

    syncs = [i for i in outbox_ids if kinds(session)[i] == OutboxKind.CRM_SYNC]
    assert set(broker.lingering) == set(syncs)
    assert 1 < min(broker.lingering.values()) <= max(broker.lingering.values()) <= settings.crm_batch_linger_seconds
    assert len(syncs) == 3 and sorted(broker.crm) == sorted(syncs)

    session.execute(update(OutboxMessage).values(created_at=utcnow() - timedelta(minutes=5)))
    session.commit()
    offered_again = RecordingDispatcher()  # the sweeper offering the page again, long after
    hand_on(syncs, services(settings, crm=BatchingCRM()), offered_again)
    assert sorted(offered_again.crm) == sorted(syncs) and offered_again.lingering == {}, "its wait is over"


def test_texts_not_started_in_time_go_to_the_broker(
    session: Session, settings: Settings, form_object: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dispatch, "IN_PLACE_SECONDS", -1.0)  # Twilio so slow the time is up before the first
    outbox_ids = processed_page(session, settings, form_object, 2)
    messenger, broker = RecordingMessenger(), RecordingDispatcher()

    hand_on(outbox_ids, services(settings, messenger=messenger), broker)

    kind_of = kinds(session)
    assert messenger.sent == []
    assert sorted(broker.ready) == sorted(i for i in outbox_ids if kind_of[i] == OutboxKind.STAFF_ALERT)
    assert sorted(broker.crm) == sorted(i for i in outbox_ids if kind_of[i] == OutboxKind.CRM_SYNC)


def test_an_alert_that_fails_in_place_is_due_again_through_the_broker(
    session: Session, settings: Settings, form_object: dict[str, Any]
) -> None:
    from integrations.errors import ServiceUnavailable

    outbox_ids = processed_page(session, settings, form_object, 1)
    messenger = RecordingMessenger(failures=[ServiceUnavailable("Twilio answered 503; will retry")])

    due_again = hand_on(outbox_ids, services(settings, messenger=messenger), RecordingDispatcher())

    [(alert_id, retry_in)] = due_again
    assert kinds(session)[alert_id] == OutboxKind.STAFF_ALERT and retry_in.total_seconds() == 5
