"""How a CRM sync retries through a flaky, rate-limited CRM: it never goes dead while it moves forward or waits."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from config.settings import Settings
from integrations.crm import CallbackTaskSpec, LogOnlyCRM
from integrations.errors import IntegrationError, RateLimited, ServiceUnavailable
from tests.conftest import make_entry
from tests.worker.delivery.test_outbox import new_lead_outbox, services
from worker.delivery.outbox import backoff, deliver
from worker.intake.entries import store_entry
from worker.leads.processing import process_submission
from worker.store.db import utcnow
from worker.store.models import Lead, OutboxKind, OutboxMessage, OutboxState, Submission, SubmissionSource


@dataclass
class FlakyCRM(LogOnlyCRM):
    """Notes and tasks fail with the queued errors, one per call, before going through."""

    note_failures: list[IntegrationError] = field(default_factory=list)
    task_failures: list[IntegrationError] = field(default_factory=list)
    note_lookups: list[bool] = field(default_factory=list)

    def add_note(self, contact_id: str, text: str, at: datetime, *, look_first: bool = False) -> str:
        self.note_lookups.append(look_first)
        if self.note_failures:
            raise self.note_failures.pop(0)
        return super().add_note(contact_id, text, at)

    def ensure_callback_task(self, contact_id: str, task: CallbackTaskSpec) -> str:
        if self.task_failures:
            raise self.task_failures.pop(0)
        return super().ensure_callback_task(contact_id, task)


def bad_gateway() -> ServiceUnavailable:
    return ServiceUnavailable("HubSpot failed with 502 on POST /crm/v3/objects/tasks; will retry", status=502)


def deliver_until_settled(session: Session, settings: Settings, outbox_id: int, crm: FlakyCRM) -> OutboxMessage:
    now = utcnow()
    for _ in range(50):
        now += timedelta(hours=1)
        if deliver(session, outbox_id, services(settings, crm=crm), now=now).state != OutboxState.PENDING:
            break
    return session.get_one(OutboxMessage, outbox_id, populate_existing=True)


def test_a_sync_that_gets_further_on_each_attempt_is_not_parked_as_dead(
    session: Session, settings: Settings, form_object: dict[str, Any]
) -> None:
    limited = settings.model_copy(update={"max_delivery_attempts": 3})
    ids = new_lead_outbox(session, limited, form_object)
    crm = FlakyCRM(note_failures=[bad_gateway(), bad_gateway()], task_failures=[bad_gateway(), bad_gateway()])

    row = deliver_until_settled(session, limited, ids[OutboxKind.CRM_SYNC], crm)

    assert row.state == OutboxState.DELIVERED, "four failures, but never three in a row on one step"


def test_rate_limits_do_not_count_towards_the_attempts_that_park_a_row(
    session: Session, settings: Settings, form_object: dict[str, Any]
) -> None:
    limited = settings.model_copy(update={"max_delivery_attempts": 2})
    ids = new_lead_outbox(session, limited, form_object)
    too_many = [RateLimited("HubSpot rate limit hit on POST /crm/v3/objects/tasks; will retry", retry_after=1.0)] * 5
    crm = FlakyCRM(task_failures=list(too_many))

    row = deliver_until_settled(session, limited, ids[OutboxKind.CRM_SYNC], crm)

    assert row.state == OutboxState.DELIVERED


def test_the_first_retry_wait_follows_the_setting_and_doubles() -> None:
    error = bad_gateway()
    first = timedelta(seconds=0.5)

    assert [backoff(n, error, first).total_seconds() for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]
    assert backoff(1, error) == timedelta(seconds=5)
    assert backoff(60, error) == timedelta(minutes=30)
    assert backoff(6, error, first, timedelta(seconds=3)) == timedelta(seconds=3)


def test_a_note_whose_answer_was_lost_is_looked_for_before_it_is_added_again(
    session: Session, settings: Settings, form_object: dict[str, Any]
) -> None:
    ids = new_lead_outbox(session, settings, form_object)
    crm = FlakyCRM(note_failures=[bad_gateway()])

    row = deliver_until_settled(session, settings, ids[OutboxKind.CRM_SYNC], crm)

    assert row.state == OutboxState.DELIVERED
    assert crm.note_lookups == [False, True], "only the retry, which may follow a lost answer, looks first"


@dataclass
class CountingCRM(FlakyCRM):
    notes_sent: int = 0

    def add_note(self, contact_id: str, text: str, at: datetime, *, look_first: bool = False) -> str:
        self.notes_sent += 1
        return super().add_note(contact_id, text, at, look_first=look_first)


def test_a_note_made_before_the_sync_waits_on_the_search_index_is_kept_for_the_retry(
    session: Session, settings: Settings, form_object: dict[str, Any]
) -> None:
    """The person wrote again while their first request's task had just lost its answer: the repeat's sync adds
    its note, then must wait for the CRM's search before looking for that task. The note's id is kept through
    the wait, so the retry does not send the note again."""
    first = new_lead_outbox(session, settings, form_object)
    repeat = store_entry(session, site=settings.site, entry=make_entry(2), source=SubmissionSource.CLI)
    session.commit()
    process_submission(session, repeat.submission_id, settings)
    session.commit()
    first_sync = session.get_one(OutboxMessage, first[OutboxKind.CRM_SYNC])
    repeat_sync = session.scalars(select(OutboxMessage).where(
        OutboxMessage.submission_id == repeat.submission_id, OutboxMessage.kind == OutboxKind.CRM_SYNC)).one()
    assert repeat_sync.lead_id == first_sync.lead_id
    now = utcnow()
    lead = session.get_one(Lead, first_sync.lead_id)
    lead.crm_contact_id = "contact-1"
    session.get_one(Submission, first_sync.submission_id).crm_note_id = "note-1"
    first_sync.state = OutboxState.DELIVERED
    first_sync.unanswered, first_sync.unanswered_at = "task", now  # its task went out, the answer never came
    session.commit()
    crm = CountingCRM()

    waited = deliver(session, repeat_sync.id, services(settings, crm=crm), now=now)

    assert waited.state == OutboxState.PENDING and waited.retry_in is not None, "the task waits for the index"
    session.expire_all()
    assert session.get_one(Submission, repeat.submission_id).crm_note_id is not None, "the note's id is kept"
    later = deliver(session, repeat_sync.id, services(settings, crm=crm), now=now + timedelta(minutes=5))
    assert later.state == OutboxState.DELIVERED
    assert crm.notes_sent == 1, "the retry resumed at the task"


def test_a_failed_crm_sync_is_retried_in_the_crms_lane_and_a_failed_staff_text_is_not(
    session: Session, settings: Settings, form_object: dict[str, Any]
) -> None:
    from tests.worker.delivery.test_outbox import RecordingMessenger

    ids = new_lead_outbox(session, settings, form_object)
    now = utcnow()
    failing = services(settings, crm=FlakyCRM(note_failures=[bad_gateway()]),
                       messenger=RecordingMessenger(failures=[ServiceUnavailable("Twilio answered 503; will retry")]))

    sync = deliver(session, ids[OutboxKind.CRM_SYNC], failing, now=now)
    text = deliver(session, ids[OutboxKind.STAFF_ALERT], failing, now=now)

    assert sync.state == text.state == OutboxState.PENDING
    assert sync.crm and not text.crm


@dataclass
class HeldBackCRM(FlakyCRM):
    """A note call held up on its way out (a rate limit's pause) before it fails without an answer."""

    held: float = 0.3
    started: list[datetime] = field(default_factory=list)

    def add_note(self, contact_id: str, text: str, at: datetime, *, look_first: bool = False) -> str:
        self.started.append(utcnow())
        time.sleep(self.held)
        return super().add_note(contact_id, text, at, look_first=look_first)


def test_a_note_call_held_back_before_it_failed_is_looked_for_only_after_it_gave_up_and_the_index_caught_up(
    session: Session, settings: Settings, form_object: dict[str, Any]
) -> None:
    ids = new_lead_outbox(session, settings, form_object)
    crm = HeldBackCRM(note_failures=[bad_gateway()])
    first = deliver(session, ids[OutboxKind.CRM_SYNC], services(settings, crm=crm), now=utcnow())
    assert first.state == OutboxState.PENDING
    wait = timedelta(seconds=settings.http_timeout_seconds + crm.lookup_lag_seconds("note"))

    # The note may have been written as late as the call's end: a look one index wait after the call started
    # could miss it.
    early = deliver(session, ids[OutboxKind.CRM_SYNC], services(settings, crm=crm),
                    now=crm.started[0] + wait + timedelta(seconds=crm.held / 2))

    assert early.state == OutboxState.PENDING and early.retry_in is not None, "deferred, not looked for yet"
    assert crm.note_lookups == [False]
    done = deliver(session, ids[OutboxKind.CRM_SYNC], services(settings, crm=crm),
                   now=crm.started[0] + wait + timedelta(seconds=crm.held * 2))
    assert done.state == OutboxState.DELIVERED and crm.note_lookups == [False, True]
