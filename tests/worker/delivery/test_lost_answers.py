"""A create the CRM carried out but answered too late is found, not made again, whichever attempt or outbox row
retries it and whatever other code does to the attempt count (docs/idempotency.md). The CRM is the loopback
HubSpot fake, its bodies checked against HubSpot's own models."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from config.settings import Settings
from integrations.hubspot.client import HubSpotCRM
from integrations.twilio.client import TwilioMessenger
from tests.conftest import make_entry
from tests.fakes.storms import StormyProviders
from tests.worker.delivery.test_outbox import new_lead_outbox, services
from worker.delivery.outbox import deliver
from worker.intake.entries import store_entry
from worker.leads.processing import process_submission
from worker.store.db import utcnow
from worker.store.models import Lead, OutboxKind, OutboxMessage, OutboxState, SubmissionSource

TIMEOUT = 0.5


@pytest.fixture
def hubspot() -> Iterator[StormyProviders]:
    with StormyProviders() as fake:
        fake.storm.hold_seconds = TIMEOUT * 3
        yield fake


def hubspot_crm(fake: StormyProviders, *, batches: bool) -> HubSpotCRM:
    return HubSpotCRM("pat-na1-test", base_url=fake.url, timeout=TIMEOUT, custom_properties=batches,
                      batch_size=100 if batches else 0, search_lag_seconds=0.0)


def deliver_until_settled(session: Session, settings: Settings, outbox_id: int, crm: HubSpotCRM) -> OutboxMessage:
    now = utcnow()
    for _ in range(10):
        now += timedelta(minutes=1)
        if deliver(session, outbox_id, services(settings, crm=crm), now=now).state != OutboxState.PENDING:
            break
    return session.get_one(OutboxMessage, outbox_id, populate_existing=True)


def test_a_batch_whose_note_was_written_but_answered_late_and_then_throttled_leaves_exactly_one_note(
    session: Session, settings: Settings, form_object: dict[str, Any], hubspot: StormyProviders
) -> None:
    quick = settings.model_copy(update={"crm_batch_linger_seconds": 0.0, "http_timeout_seconds": TIMEOUT})
    ids = new_lead_outbox(session, quick, form_object)
    # The contact step goes through; the note is stored but its answer comes after our timeout; the look for it
    # on the next attempt is refused with a 429.
    hubspot.storm.script = [("POST /crm/v3/objects/notes/batch/create", "late"),
                            ("POST /crm/v3/objects/notes/search", "429")]

    row = deliver_until_settled(session, quick, ids[OutboxKind.CRM_SYNC], hubspot_crm(hubspot, batches=True))

    state = hubspot.state
    assert row.state == OutboxState.DELIVERED
    assert len(state.notes) == 1, "exactly one note"
    assert (len(state.contacts), len(state.tasks)) == (1, 1)
    assert state.refused == [], "every body is valid by HubSpot's models"
    assert row.fruitless == 0 and row.unanswered is None


def test_a_batched_task_whose_answer_was_lost_is_looked_for_by_the_repeat_requests_row_that_carries_the_retry(
    session: Session, settings: Settings, form_object: dict[str, Any], hubspot: StormyProviders
) -> None:
    quick = settings.model_copy(update={"crm_batch_linger_seconds": 0.0, "http_timeout_seconds": TIMEOUT})
    ids = new_lead_outbox(session, quick, form_object)
    crm = hubspot_crm(hubspot, batches=True)
    hubspot.storm.script = [("POST /crm/v3/objects/tasks/batch/create", "late")]
    first = deliver(session, ids[OutboxKind.CRM_SYNC], services(quick, crm=crm))
    assert first.state == OutboxState.PENDING and len(hubspot.state.tasks) == 1

    # The same person asks again; the repeat's row syncs the lead before the first row is due.
    stored = store_entry(session, site=quick.site, entry=make_entry(2, **{"4": "Please call me back soon."}),
                         source=SubmissionSource.CLI)
    session.commit()
    process_submission(session, stored.submission_id, quick)
    session.commit()
    repeat = session.scalars(select(OutboxMessage).where(
        OutboxMessage.kind == OutboxKind.CRM_SYNC, OutboxMessage.id != ids[OutboxKind.CRM_SYNC])).one()
    later = utcnow() + timedelta(minutes=1)
    assert deliver(session, repeat.id, services(quick, crm=crm), now=later).state == OutboxState.DELIVERED
    assert deliver_until_settled(session, quick, ids[OutboxKind.CRM_SYNC], crm).state == OutboxState.DELIVERED

    state = hubspot.state
    assert len(state.tasks) == 1, "the callback task is not created twice"
    assert (len(state.contacts), len(state.notes)) == (1, 2)
    lead = session.scalars(select(Lead)).one()
    assert lead.crm_task_id in state.tasks
    assert state.refused == []


def test_a_text_whose_sender_died_mid_request_is_neither_sent_nor_in_the_way_of_a_lookup() -> None:
    """A worker SIGKILLed while writing its request leaves the vendor half a request: Twilio sends nothing, and the
    retry's look for the text still works (the fake once stored such a text without its `To`, and every later lookup
    of texts failed on it)."""
    with StormyProviders() as fake:
        twilio = TwilioMessenger("AC" + "0" * 32, "token", "+18555550100", api_base_url=fake.url, timeout=TIMEOUT)
        body = b"Body=New+request+L-0101&From=%2B18555550100&To=%2B15555550123"
        with socket.create_connection(("127.0.0.1", fake.server_address[1])) as half:
            half.sendall(b"POST /2010-04-01/Accounts/AC" + b"0" * 32 + b"/Messages.json HTTP/1.1\r\n"
                         b"Host: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                         b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body[:40])
            half.shutdown(socket.SHUT_WR)  # the sender is gone: the fake reads to the end of what was sent
            half.recv(4096)  # and answers, or hangs up

        assert twilio.find_sms("+15555550123", "New request L-0101") is None
        assert fake.state.sms == []
