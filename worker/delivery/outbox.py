"""Delivering outbox rows: lease one, do its work, record the outcome, retry with backoff, or park it.

A lease (not a held transaction) marks a row as being worked on, renewed while the work runs (worker/store/leases.py),
so a worker killed mid-delivery frees the row within one short lease. Every create is made safe to repeat
(docs/idempotency.md): a row records a create sent without an answer yet (`unanswered`), and whichever row
retries it looks for it first. The retry budget (`fruitless`) counts attempts in a row that made no progress: a
sync that moves forward through a flaky vendor, or one that waits for a 429's Retry-After, never goes dead.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, or_, select, update
from sqlalchemy.orm import Session

from config.settings import Settings
from integrations.crm import BatchCRM, batching
from integrations.errors import IntegrationError, RateLimited
from worker.delivery.crm_correct import correct_crm
from worker.delivery.crm_sync import (
    Deferred,
    add_voicemail_note,
    assign_claimed_task,
    log_bridged_call,
    sync_batch,
    sync_lead,
)
from worker.staff.alerts import acknowledge_person, alert_staff
from worker.staff.services import Services
from worker.store.db import utcnow
from worker.store.leases import LEAD_CRM, OUTBOX, WORK_LEASE, keeper
from worker.store.models import OutboxKind, OutboxMessage, OutboxState, Submission

log = logging.getLogger(__name__)

LEASE = WORK_LEASE
MAX_BACKOFF = timedelta(minutes=30)
FIRST_RETRY = timedelta(seconds=5)
# Outbox rows that only write to the CRM: they wait in the CRM's own queue, behind which no staff text waits.
CRM_KINDS = frozenset({OutboxKind.CRM_SYNC, OutboxKind.CRM_ASSIGN, OutboxKind.CRM_CALL_LOG, OutboxKind.CRM_VOICEMAIL,
                       OutboxKind.CRM_CORRECT})


# What a delivered row no longer carries: its lease, its last error, its spent retry budget, its doubt.
CLEARED_ON_DELIVERY: dict[str, object] = {
    "leased_until": None, "last_error": None, "fruitless": 0, "unanswered": None, "unanswered_at": None}


@dataclass(frozen=True)
class Delivery:
    """The outcome of one delivery attempt; `retry_in` is set when the row is due again. A batch also reports
    when the other rows it carried are due again."""

    state: OutboxState | None  # None: not leased (delivered already, leased elsewhere, or not due)
    retry_in: timedelta | None = None
    others_due: tuple[tuple[int, timedelta], ...] = ()
    crm: bool = False  # CRM work (`CRM_KINDS`; the others due are too): retried in the CRM's own queue


def backoff(fruitless: int, error: IntegrationError, first: timedelta = FIRST_RETRY,
            longest: timedelta = MAX_BACKOFF) -> timedelta:
    """The wait before the next attempt: a 429's Retry-After (the vendor's own word), else `first` doubling with
    each attempt in a row that made no progress, up to `longest`."""
    if isinstance(error, RateLimited) and error.retry_after is not None:
        return timedelta(seconds=max(1.0, error.retry_after))
    return min(first * (1 << min(max(0, fruitless - 1), 20)), longest)


# Built once: every delivery runs it, and building it costs about as much as running it.
_LEASE = (
    update(OutboxMessage)
    .where(
        OutboxMessage.id == bindparam("outbox_id"),
        OutboxMessage.state == OutboxState.PENDING,
        OutboxMessage.next_attempt_at <= bindparam("now"),
        or_(OutboxMessage.leased_until.is_(None), OutboxMessage.leased_until < bindparam("now")),
    )
    .values(leased_until=bindparam("until"), attempts=OutboxMessage.attempts + 1)
    .returning(OutboxMessage)
)


def lease(session: Session, outbox_id: int, now: datetime) -> OutboxMessage | None:
    """Take the row for this worker if it is pending, due and not leased by another, and load it as taken.
    Commits."""
    row = session.scalars(
        _LEASE, {"outbox_id": outbox_id, "now": now, "until": now + LEASE},
        execution_options={"synchronize_session": False, "populate_existing": True},
    ).one_or_none()
    session.commit()
    if row is None:
        return None
    keeper.hold(OUTBOX, [outbox_id])
    return row


def lease_batch_mates(
    session: Session, row: OutboxMessage, site: str, limit: int, now: datetime, soon: timedelta
) -> list[OutboxMessage]:
    """Lease up to `limit` more CRM syncs of the same site that are due or due within `soon` (the rows of a batch
    that failed together are due again a few milliseconds apart), one per lead and not the row's lead. Commits."""
    candidates = session.execute(
        select(OutboxMessage.id, OutboxMessage.lead_id)
        .join(Submission, Submission.id == OutboxMessage.submission_id)
        .where(
            OutboxMessage.kind == OutboxKind.CRM_SYNC,
            OutboxMessage.state == OutboxState.PENDING,
            OutboxMessage.next_attempt_at <= now + soon,
            or_(OutboxMessage.leased_until.is_(None), OutboxMessage.leased_until < now),
            OutboxMessage.id != row.id,
            Submission.site == site,
        )
        .order_by(OutboxMessage.next_attempt_at)
        .limit(limit * 2)
    ).all()
    leads = {row.lead_id}
    chosen: list[int] = []
    for outbox_id, lead_id in candidates:
        if lead_id not in leads and len(chosen) < limit:
            leads.add(lead_id)
            chosen.append(outbox_id)
    if not chosen:
        return []
    taken = session.scalars(
        update(OutboxMessage)
        .where(
            OutboxMessage.id.in_(chosen),
            OutboxMessage.state == OutboxState.PENDING,
            or_(OutboxMessage.leased_until.is_(None), OutboxMessage.leased_until < now),
        )
        .values(leased_until=now + LEASE, attempts=OutboxMessage.attempts + 1)
        .returning(OutboxMessage.id)
    ).all()
    session.commit()
    keeper.hold(OUTBOX, taken)
    return list(session.scalars(select(OutboxMessage).where(OutboxMessage.id.in_(taken))
                                .execution_options(populate_existing=True)))


@dataclass(frozen=True)
class _Batching:
    target: tuple[str, BatchCRM] | None = None  # a CRM sync's site, and its CRM that takes batches
    wait: timedelta | None = None  # how much longer a new sync waits for others to share its batch
    settled: bool = False  # no longer pending: most often carried by another sync's batch already


def _batch_crm(session: Session, outbox_id: int, services: Services, now: datetime) -> _Batching:
    """How a row is delivered when some configured CRM takes batches. Reads a few columns in one statement, and
    nothing when no configured CRM takes batches."""
    if not services.batches():
        return _Batching()
    found = session.execute(
        select(OutboxMessage.kind, OutboxMessage.attempts, OutboxMessage.state, OutboxMessage.created_at,
               Submission.site)
        .join(Submission, Submission.id == OutboxMessage.submission_id)
        .where(OutboxMessage.id == outbox_id)
    ).first()
    if found is None or found.state != OutboxState.PENDING:
        return _Batching(settled=True)  # the lease would find nothing to take
    crm = batch_crm_of(found.kind, found.site, services)
    if crm is None:
        return _Batching()
    return _Batching((found.site, crm), lingering(found.attempts, found.state, found.created_at, services.settings,
                                                   now))


def batch_crm_of(kind: str, site: str, services: Services) -> BatchCRM | None:
    """The CRM whose batch a row of `kind` from `site` joins: a CRM sync's, when its site's CRM takes batches."""
    return batching(services.crm_for(site)) if kind == OutboxKind.CRM_SYNC else None


def lingering(attempts: int, state: OutboxState, created_at: datetime, settings: Settings,
               now: datetime) -> timedelta | None:
    """How much longer a new sync for a batching CRM waits for others to share its batch; None: no longer."""
    if attempts or state != OutboxState.PENDING:
        return None
    wait = created_at + timedelta(seconds=settings.crm_batch_linger_seconds) - now
    return wait if wait > timedelta(0) else None


def _deliver_batch(session: Session, row: OutboxMessage, site: str, crm: BatchCRM, services: Services,
                   now: datetime, started: datetime) -> Delivery:
    soon = timedelta(seconds=max(1.0, services.settings.crm_batch_linger_seconds))
    rows = [row, *lease_batch_mates(session, row, site, crm.batch_size - 1, now, soon)]
    try:
        errors = sync_batch(session, rows, crm, services.roster, services.settings, now)
    except Exception as exc:
        session.rollback()
        failure = internal_error(exc, f"a CRM batch of {len(rows)} row(s)")
        errors = {each.id: failure for each in rows}
    done = {each.id: _delivered(session, each, commit=False) for each in rows if each.id not in errors}
    session.commit()  # the delivered rows, in one commit
    failed = {each.id: record_failure(session, each.id, errors[each.id], services.settings, started)
              for each in rows if each.id in errors}
    either = done | failed
    outcomes = {each.id: either[each.id] for each in rows}  # in the batch's order
    others = tuple((outbox_id, outcome.retry_in) for outbox_id, outcome in outcomes.items()
                   if outbox_id != row.id and outcome.retry_in is not None)
    if len(rows) > 1:
        log.info("CRM batch of %d lead(s): %d delivered", len(rows),
                 sum(outcome.state == OutboxState.DELIVERED for outcome in outcomes.values()))
    return Delivery(outcomes[row.id].state, outcomes[row.id].retry_in, others, crm=True)


def _delivered(session: Session, row: OutboxMessage, *, commit: bool = True) -> Delivery:
    """Record the row delivered, with whatever the delivery left pending in the session, in one commit (one UPDATE
    of the row with the changes the delivery made to it), unless `commit` is false: then the caller's next commit."""
    row.state, row.delivered_at = OutboxState.DELIVERED, utcnow()
    for name, value in CLEARED_ON_DELIVERY.items():
        setattr(row, name, value)
    if commit:
        session.commit()
    return Delivery(OutboxState.DELIVERED)


def _do(session: Session, row: OutboxMessage, services: Services, now: datetime) -> None:
    # Held while the work runs: the session keeps loaded rows only while something refers to them, and each kind
    # reads the submission again.
    submission = session.get_one(Submission, row.submission_id)
    crm = services.crm_for(submission.site)
    if row.kind == OutboxKind.CRM_SYNC:
        sync_lead(session, row, crm, services.roster, services.settings, now)
    elif row.kind == OutboxKind.STAFF_ALERT:
        alert_staff(session, row, services, now)
    elif row.kind == OutboxKind.CRM_ASSIGN:
        assign_claimed_task(session, row, crm)
    elif row.kind == OutboxKind.CRM_CALL_LOG:
        log_bridged_call(session, row, crm, services.settings, now)
    elif row.kind == OutboxKind.PERSON_ACK:
        acknowledge_person(session, row, services)
    elif row.kind == OutboxKind.CRM_VOICEMAIL:
        add_voicemail_note(session, row, crm, services.settings, now)
    elif row.kind == OutboxKind.CRM_CORRECT:
        correct_crm(session, row, crm)
    else:
        raise IntegrationError(f"unknown outbox kind {row.kind!r}: upgrade admitflow", permanent=True)


def deliver(session: Session, outbox_id: int, services: Services, now: datetime | None = None, *,
            batches: bool = True) -> Delivery:
    """Deliver one row. With `batches`, a CRM sync for a CRM that takes batches waits a moment for others (the
    returned `retry_in`), then carries as many waiting syncs of its site as one call takes."""
    try:
        return _deliver(session, outbox_id, services, now, batches=batches)
    finally:
        # The outcomes are committed, or the database is gone: either way this thread stops renewing the leases it
        # took, so they are given up or run out. A lead lease renewed after its sync ended would keep the lead's
        # every later sync waiting on a "busy" lead for as long as this process lives.
        keeper.release(OUTBOX)
        keeper.release(LEAD_CRM)


def _deliver(session: Session, outbox_id: int, services: Services, now: datetime | None, *,
             batches: bool) -> Delivery:
    started = utcnow()  # the wall clock, for progress made during this attempt; `now` may be a test's
    now = now or started
    target = None
    if batches:
        how = _batch_crm(session, outbox_id, services, now)
        if how.settled or how.wait is not None:
            session.rollback()  # ends the read: nothing is held open while the row waits
            # A CRM sync waiting for others to share its batch is due again after its wait.
            return Delivery(None) if how.settled else Delivery(None, retry_in=how.wait, crm=True)
        target = how.target
    row = lease(session, outbox_id, now)
    if row is None:
        return Delivery(None)
    if target is not None:
        return _deliver_batch(session, row, *target, services, now, started)
    try:
        _do(session, row, services, now)
    except IntegrationError as exc:
        session.rollback()
        return record_failure(session, outbox_id, exc, services.settings, started)
    except Exception as exc:
        session.rollback()
        failure = internal_error(exc, f"outbox {outbox_id} ({row.kind})")
        return record_failure(session, outbox_id, failure, services.settings, started)
    return _delivered(session, row)


def internal_error(exc: Exception, what: str) -> IntegrationError:
    """Our own bug or a database hiccup, retried like any transient failure. The exception text may quote
    PHI-bearing values, so only its type is logged and recorded."""
    log.error("%s failed with %s", what, type(exc).__name__)
    return IntegrationError(f"internal error {type(exc).__name__}; see the worker log", permanent=False)


def record_failure(session: Session, outbox_id: int, error: IntegrationError, settings: Settings,
                   started: datetime) -> Delivery:
    """Record a failed attempt and when to try again. Only an attempt that made no progress and was not told to
    wait (a 429, a busy lead, a search index catching up) spends the retry budget; a row goes dead when the error
    is permanent or the budget is spent, and `last_error` then says which."""
    row = session.get_one(OutboxMessage, outbox_id, populate_existing=True)
    row.last_error, row.leased_until = error.message[:1000], None
    if isinstance(error, Deferred):
        row.next_attempt_at = utcnow() + error.retry_in
        session.commit()
        return Delivery(OutboxState.PENDING, retry_in=error.retry_in, crm=row.kind in CRM_KINDS)
    progressed = row.progressed_at is not None and row.progressed_at >= started
    if progressed:
        row.fruitless = 0
    elif not isinstance(error, RateLimited):
        row.fruitless += 1
    if error.permanent or row.fruitless >= settings.max_delivery_attempts:
        row.state = OutboxState.DEAD
        why = ("refused for good" if error.permanent
               else f"{row.fruitless} attempts in a row made no progress ({row.attempts} in all)")
        row.last_error = f"dead: {why}: {error.message}"[:1000]
        log.error("outbox %s (%s) dead: %s", row.id, row.kind, row.last_error)
        session.commit()
        return Delivery(OutboxState.DEAD)
    delay = backoff(row.fruitless, error, timedelta(seconds=settings.retry_first_seconds),
                    timedelta(seconds=settings.retry_max_seconds))
    row.next_attempt_at = utcnow() + delay
    log.warning("outbox %s (%s) attempt %d failed (%d without progress), retrying in %ss: %s",
                row.id, row.kind, row.attempts, row.fruitless, int(delay.total_seconds()), error.message)
    session.commit()
    return Delivery(OutboxState.PENDING, retry_in=delay, crm=row.kind in CRM_KINDS)


def expired_outbox_ids(session: Session, now: datetime, *, limit: int = 500) -> list[int]:
    """Pending rows whose lease ran out, proof that their worker died (a live one renews its leases): their leases
    are cleared and they are stamped as offered now, so the next pass does not find them again. Does not commit."""
    expired = (select(OutboxMessage.id)
               .where(OutboxMessage.state == OutboxState.PENDING, OutboxMessage.leased_until < now)
               .order_by(OutboxMessage.leased_until).limit(limit).with_for_update(skip_locked=True))
    return sorted(session.scalars(
        update(OutboxMessage).where(OutboxMessage.id.in_(expired.scalar_subquery()))
        .values(leased_until=None, offered_at=now).returning(OutboxMessage.id)
        .execution_options(synchronize_session=False)))


def due_outbox_ids(session: Session, now: datetime, *, offered_before: datetime, limit: int = 500) -> list[int]:
    """Pending rows no one leases, due and last offered before `offered_before` (a message lost from the broker, a
    backoff too long to wait for in the broker), stamped as offered now, the texts first: a CRM backlog past the
    limit never holds a text back to a later pass. Does not commit."""
    if limit <= 0:
        return []
    lost = (select(OutboxMessage.id)
            .where(OutboxMessage.state == OutboxState.PENDING, OutboxMessage.leased_until.is_(None),
                   OutboxMessage.next_attempt_at <= offered_before,
                   OutboxMessage.offered_at < offered_before)
            .order_by(OutboxMessage.kind.in_(CRM_KINDS), OutboxMessage.next_attempt_at)
            .limit(limit).with_for_update(skip_locked=True))
    return sorted(session.scalars(
        update(OutboxMessage).where(OutboxMessage.id.in_(lost.scalar_subquery()))
        .values(offered_at=now).returning(OutboxMessage.id)
        .execution_options(synchronize_session=False)))


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
    row.fruitless = 0
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
