"""Delivering outbox rows: lease one, do its work, record the outcome, retry with backoff, or park it.

A lease (not a held transaction) marks a row as being worked on, so a worker killed mid-delivery only delays the
row until its lease runs out; the CRM writes are keyed so that doing one again updates instead of duplicating.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from config.settings import Settings
from integrations.errors import IntegrationError, RateLimited
from worker.alerts import acknowledge_person, alert_staff
from worker.crm_sync import LeadBusy, assign_claimed_task, log_bridged_call, sync_lead
from worker.db import utcnow
from worker.models import OutboxKind, OutboxMessage, OutboxState, Submission
from worker.services import Services

log = logging.getLogger(__name__)

LEASE = timedelta(minutes=5)
MAX_BACKOFF = timedelta(minutes=30)
FIRST_RETRY = timedelta(seconds=5)


@dataclass(frozen=True)
class Delivery:
    """The outcome of one delivery attempt; `retry_in` is set when the row is due again."""

    state: OutboxState | None  # None: not leased (delivered already, leased elsewhere, or not due)
    retry_in: timedelta | None = None


def backoff(attempts: int, error: IntegrationError, first: timedelta = FIRST_RETRY) -> timedelta:
    if isinstance(error, RateLimited) and error.retry_after is not None:
        return timedelta(seconds=max(1.0, error.retry_after))
    return min(first * (1 << min(max(0, attempts - 1), 20)), MAX_BACKOFF)


def lease(session: Session, outbox_id: int, now: datetime) -> OutboxMessage | None:
    """Take the row for this worker if it is pending, due and not leased by another. Commits."""
    taken = session.execute(
        update(OutboxMessage)
        .where(
            OutboxMessage.id == outbox_id,
            OutboxMessage.state == OutboxState.PENDING,
            OutboxMessage.next_attempt_at <= now,
            or_(OutboxMessage.leased_until.is_(None), OutboxMessage.leased_until < now),
        )
        .values(leased_until=now + LEASE, attempts=OutboxMessage.attempts + 1)
    )
    session.commit()
    if taken.rowcount != 1:  # type: ignore[attr-defined]
        return None
    return session.get_one(OutboxMessage, outbox_id, populate_existing=True)


def _do(session: Session, row: OutboxMessage, services: Services, now: datetime) -> None:
    crm = services.crm_for(session.get_one(Submission, row.submission_id).site)
    if row.kind == OutboxKind.CRM_SYNC:
        sync_lead(session, row, crm, services.roster, services.settings, now)
    elif row.kind == OutboxKind.STAFF_ALERT:
        alert_staff(session, row, services, now)
    elif row.kind == OutboxKind.CRM_ASSIGN:
        assign_claimed_task(session, row, crm)
    elif row.kind == OutboxKind.CRM_CALL_LOG:
        log_bridged_call(session, row, crm)
    elif row.kind == OutboxKind.PERSON_ACK:
        acknowledge_person(session, row, services)
    else:
        raise IntegrationError(f"unknown outbox kind {row.kind!r}: upgrade admitflow", permanent=True)


def deliver(session: Session, outbox_id: int, services: Services, now: datetime | None = None) -> Delivery:
    now = now or utcnow()
    row = lease(session, outbox_id, now)
    if row is None:
        return Delivery(None)
    try:
        _do(session, row, services, now)
    except IntegrationError as exc:
        session.rollback()
        return _failed(session, outbox_id, exc, services.settings)
    except Exception as exc:
        # Our own bug or a database hiccup. The exception text may quote PHI-bearing values, so only its type
        # is recorded; the row is retried like any transient failure.
        session.rollback()
        log.error("outbox %s (%s) failed with %s", outbox_id, row.kind, type(exc).__name__)
        error = IntegrationError(f"internal error {type(exc).__name__}; see the worker log", permanent=False)
        return _failed(session, outbox_id, error, services.settings)
    row.state, row.delivered_at, row.leased_until, row.last_error = OutboxState.DELIVERED, utcnow(), None, None
    session.commit()
    return Delivery(OutboxState.DELIVERED)


def _failed(session: Session, outbox_id: int, error: IntegrationError, settings: Settings) -> Delivery:
    row = session.get_one(OutboxMessage, outbox_id, populate_existing=True)
    row.last_error, row.leased_until = error.message[:1000], None
    if isinstance(error, LeadBusy):
        row.attempts -= 1
        delay = timedelta(seconds=random.uniform(0.5, 2.0))  # noqa: S311 (jitter, not security)
        row.next_attempt_at = utcnow() + delay
        session.commit()
        return Delivery(OutboxState.PENDING, retry_in=delay)
    if isinstance(error, RateLimited):
        # Waiting for a provider's Retry-After or a shared budget is not this row failing: not counted, so a long
        # burst (or a used-up daily limit) delays the work but never parks it as dead.
        row.attempts -= 1
    if error.permanent or row.attempts >= settings.max_delivery_attempts:
        row.state = OutboxState.DEAD
        log.error("outbox %s (%s) dead after %d attempt(s): %s", row.id, row.kind, row.attempts, error.message)
        session.commit()
        return Delivery(OutboxState.DEAD)
    delay = backoff(row.attempts, error, timedelta(seconds=settings.retry_first_seconds))
    row.next_attempt_at = utcnow() + delay
    log.warning("outbox %s (%s) attempt %d failed, retrying in %ss: %s",
                row.id, row.kind, row.attempts, int(delay.total_seconds()), error.message)
    session.commit()
    return Delivery(OutboxState.PENDING, retry_in=delay)


def due_outbox_ids(session: Session, now: datetime, *, due_before: datetime, limit: int = 500) -> list[int]:
    """Pending rows due before `due_before` and not under a live lease: lost from the broker, or whose backoff
    was too long to wait for in the broker."""
    return list(
        session.scalars(
            select(OutboxMessage.id)
            .where(
                OutboxMessage.state == OutboxState.PENDING,
                OutboxMessage.next_attempt_at <= due_before,
                or_(OutboxMessage.leased_until.is_(None), OutboxMessage.leased_until < now),
            )
            .order_by(OutboxMessage.next_attempt_at)
            .limit(limit)
        )
    )


class OutboxCommandError(ValueError):
    """An operator command that cannot apply to this row; the message says why."""


def retry_now(session: Session, outbox_id: int) -> OutboxMessage:
    """Put a dead (or waiting) row back in line for delivery now, with a fresh attempt count. Commits."""
    row = session.get(OutboxMessage, outbox_id)
    if row is None:
        raise OutboxCommandError(f"no outbox row {outbox_id}")
    if row.state not in (OutboxState.DEAD, OutboxState.PENDING):
        raise OutboxCommandError(f"outbox row {outbox_id} is {row.state}; only dead or pending rows are retried")
    row.state, row.attempts, row.next_attempt_at, row.leased_until = OutboxState.PENDING, 0, utcnow(), None
    session.commit()
    return row


def drop(session: Session, outbox_id: int) -> OutboxMessage:
    """Stop trying to deliver a row (an operator's decision, e.g. the lead was handled by phone). Commits."""
    row = session.get(OutboxMessage, outbox_id)
    if row is None:
        raise OutboxCommandError(f"no outbox row {outbox_id}")
    if row.state == OutboxState.DELIVERED:
        raise OutboxCommandError(f"outbox row {outbox_id} was delivered already; nothing to drop")
    row.state, row.leased_until = OutboxState.DROPPED, None
    row.last_error = f"dropped by an operator after {row.attempts} attempt(s)"
    session.commit()
    return row
