"""No worker connection sits `idle in transaction` while a vendor is called: a slow CRM or Twilio holds no row
locks and no snapshot open in PostgreSQL. The fakes below ask PostgreSQL itself, from a connection of their own,
each time they are called. And a delivery costs a bounded number of statements."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, event, select, text, update
from sqlalchemy.orm import Session

from config.settings import Settings
from integrations.crm import CallbackTaskSpec, ContactCard, LogOnlyCRM
from integrations.errors import ServiceUnavailable
from integrations.messaging import SentMessage
from tests.worker.delivery.test_outbox import new_lead_outbox, services
from worker.delivery.outbox import deliver
from worker.store.db import get_engine, new_session, utcnow
from worker.store.models import Lead, OutboxKind, OutboxMessage, OutboxState

OPEN_TRANSACTIONS = text(
    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
    "AND state LIKE 'idle in transaction%'"
)


@pytest.fixture
def observer(pg_settings: Settings) -> Iterator[Engine]:
    engine = create_engine(pg_settings.database_url, isolation_level="AUTOCOMMIT")
    yield engine
    engine.dispose()


@pytest.fixture
def pg_session(pg_settings: Settings) -> Iterator[Session]:
    db = new_session()
    try:
        yield db
    finally:
        db.rollback()
        db.close()


@dataclass
class Watch:
    """Counts, at each vendor call, the other connections of the database left idle inside a transaction."""

    observer: Engine
    calls: list[tuple[str, int]] = field(default_factory=list)

    def __call__(self, what: str) -> None:
        with self.observer.connect() as connection:
            self.calls.append((what, int(connection.execute(OPEN_TRANSACTIONS).scalar_one())))

    def open_during(self) -> list[tuple[str, int]]:
        return [(what, count) for what, count in self.calls if count]


@dataclass
class WatchedCRM(LogOnlyCRM):
    watch: Callable[[str], None] = lambda what: None

    def upsert_contact(self, card: ContactCard, contact_id: str | None) -> str:
        self.watch("upsert_contact")
        return super().upsert_contact(card, contact_id)

    def add_note(self, contact_id: str, text: str, at: datetime, *, look_first: bool = False) -> str:
        self.watch("add_note")
        return super().add_note(contact_id, text, at, look_first=look_first)

    def ensure_callback_task(self, contact_id: str, task: CallbackTaskSpec) -> str:
        self.watch("ensure_callback_task")
        return super().ensure_callback_task(contact_id, task)


@dataclass
class WatchedMessenger:
    watch: Callable[[str], None]
    name: str = "watched"
    sent: list[tuple[str, str]] = field(default_factory=list)
    lose_answers: int = 0

    def send_sms(self, to: str, body: str) -> SentMessage:
        self.watch("send_sms")
        self.sent.append((to, body))
        if self.lose_answers:
            self.lose_answers -= 1
            raise ServiceUnavailable("Twilio did not answer within 10s; will retry")
        return SentMessage(sid=f"SM{len(self.sent)}", status="queued")

    def find_sms(self, to: str, body: str) -> SentMessage | None:
        self.watch("find_sms")
        found = [n for n, sent in enumerate(self.sent, start=1) if sent == (to, body)]
        return SentMessage(sid=f"SM{found[-1]}", status="delivered") if found else None


def test_a_new_leads_crm_sync_and_staff_text_hold_no_transaction_while_the_vendor_is_called(
    pg_settings: Settings, pg_session: Session, form_object: dict[str, Any], observer: Engine
) -> None:
    watch = Watch(observer)
    ids = new_lead_outbox(pg_session, pg_settings, form_object)
    worker = services(pg_settings, crm=WatchedCRM(watch), messenger=WatchedMessenger(watch))

    assert deliver(pg_session, ids[OutboxKind.CRM_SYNC], worker).state == OutboxState.DELIVERED
    assert deliver(pg_session, ids[OutboxKind.STAFF_ALERT], worker).state == OutboxState.DELIVERED

    assert [what for what, _ in watch.calls] == ["upsert_contact", "add_note", "ensure_callback_task", "send_sms"]
    assert watch.open_during() == []


def test_a_retry_that_updates_a_known_contact_holds_no_transaction_while_the_crm_is_called(
    pg_settings: Settings, pg_session: Session, form_object: dict[str, Any], observer: Engine
) -> None:
    watch = Watch(observer)
    ids = new_lead_outbox(pg_session, pg_settings, form_object)
    pg_session.execute(update(Lead).values(crm_contact_id="log-contact-known"))
    pg_session.commit()

    delivery = deliver(pg_session, ids[OutboxKind.CRM_SYNC], services(pg_settings, crm=WatchedCRM(watch)))

    assert delivery.state == OutboxState.DELIVERED
    assert watch.calls[0][0] == "upsert_contact"
    assert watch.open_during() == []


def test_a_staff_text_whose_answer_was_lost_is_looked_up_with_no_transaction_open(
    pg_settings: Settings, pg_session: Session, form_object: dict[str, Any], observer: Engine
) -> None:
    watch = Watch(observer)
    ids = new_lead_outbox(pg_session, pg_settings, form_object)
    messenger = WatchedMessenger(watch, lose_answers=1)
    worker = services(pg_settings, messenger=messenger)

    first = deliver(pg_session, ids[OutboxKind.STAFF_ALERT], worker)
    again = deliver(pg_session, ids[OutboxKind.STAFF_ALERT], worker, now=utcnow() + timedelta(minutes=1))

    assert (first.state, again.state) == (OutboxState.PENDING, OutboxState.DELIVERED)
    assert [what for what, _ in watch.calls] == ["send_sms", "find_sms"] and len(messenger.sent) == 1
    assert watch.open_during() == []


def statements_of(engine: Engine, work: Callable[[], object]) -> int:
    counted = [0]

    def count(*_: object) -> None:
        counted[0] += 1

    event.listen(engine, "before_cursor_execute", count)
    try:
        work()
    finally:
        event.remove(engine, "before_cursor_execute", count)
    return counted[0]


def test_a_new_leads_deliveries_take_few_statements(
    pg_settings: Settings, pg_session: Session, form_object: dict[str, Any]
) -> None:
    ids = new_lead_outbox(pg_session, pg_settings, form_object)
    worker = services(pg_settings)

    crm_sync = statements_of(get_engine(), lambda: deliver(pg_session, ids[OutboxKind.CRM_SYNC], worker))
    staff_alert = statements_of(get_engine(), lambda: deliver(pg_session, ids[OutboxKind.STAFF_ALERT], worker))

    states = set(pg_session.scalars(select(OutboxMessage.state).execution_options(populate_existing=True)))
    assert OutboxState.DELIVERED in states
    # Measured: 29 and 14 before issue 18 (and 10 and 3 commits, 8 and 3 now).
    assert crm_sync <= 23
    assert staff_alert <= 10
