"""The sweeper: work a dead worker held is offered again at once; a backlog waiting in the broker at most once per
stale period."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from config.settings import Settings
from tests.conftest import make_entry
from tests.worker.delivery.test_outbox import new_lead_outbox
from worker.delivery.outbox import LEASE, lease
from worker.delivery.sweeper import sweep
from worker.intake.entries import register_form, store_entry
from worker.store.db import utcnow
from worker.store.leases import WORKER_LEASE, Keeper
from worker.store.models import LiveWorker, OutboxKind, OutboxMessage, Submission, SubmissionSource

STALE = timedelta(seconds=120)


def stored_submissions(session: Session, settings: Settings, form_object: dict[str, Any], count: int) -> list[int]:
    register_form(session, site=settings.site, form_object=form_object)
    ids = [store_entry(session, site=settings.site, entry=make_entry(number), source=SubmissionSource.CLI)
           .submission_id for number in range(100, 100 + count)]
    session.commit()
    return ids


def test_a_row_whose_lease_ran_out_is_offered_at_the_next_pass_once_with_its_lease_cleared(
    session: Session, settings: Settings, form_object: dict[str, Any]
) -> None:
    ids = new_lead_outbox(session, settings, form_object)
    taken_at = utcnow()
    assert lease(session, ids[OutboxKind.STAFF_ALERT], taken_at) is not None  # and its worker is killed
    after = taken_at + LEASE + timedelta(seconds=1)

    first = sweep(session, after, stale_after=STALE)
    second = sweep(session, after + timedelta(seconds=5), stale_after=STALE)

    assert first.expired_outbox_ids == [ids[OutboxKind.STAFF_ALERT]]
    assert ids[OutboxKind.STAFF_ALERT] not in second.outbox_ids + second.expired_outbox_ids
    session.expire_all()
    assert session.get_one(OutboxMessage, ids[OutboxKind.STAFF_ALERT]).leased_until is None


def test_a_live_lease_is_left_alone(session: Session, settings: Settings, form_object: dict[str, Any]) -> None:
    ids = new_lead_outbox(session, settings, form_object)
    taken_at = utcnow()
    lease(session, ids[OutboxKind.STAFF_ALERT], taken_at)

    found = sweep(session, taken_at + LEASE - timedelta(seconds=1), stale_after=timedelta(0))

    assert ids[OutboxKind.STAFF_ALERT] not in found.outbox_ids + found.expired_outbox_ids


def test_a_backlog_waiting_in_the_broker_is_offered_again_at_most_once_per_stale_period(
    session: Session, settings: Settings, form_object: dict[str, Any]
) -> None:
    waiting = set(stored_submissions(session, settings, form_object, 3))
    pending = sorted(new_lead_outbox(session, settings, form_object).values())
    now = utcnow()

    passes = [sweep(session, now + STALE + timedelta(seconds=second), stale_after=STALE) for second in (1, 3, 5, 7)]

    assert set(passes[0].submission_ids) == waiting and passes[0].outbox_ids == pending
    assert all(later.submission_ids == [] and later.outbox_ids == [] for later in passes[1:])
    again = sweep(session, now + 2 * STALE + timedelta(seconds=2), stale_after=STALE)
    assert set(again.submission_ids) == waiting and again.outbox_ids == pending


def test_work_younger_than_the_stale_period_is_left_to_the_broker(
    session: Session, settings: Settings, form_object: dict[str, Any]
) -> None:
    stored_submissions(session, settings, form_object, 2)
    new_lead_outbox(session, settings, form_object)

    found = sweep(session, utcnow() + STALE - timedelta(seconds=5), stale_after=STALE)

    assert (found.count, found.dead_workers) == (0, 0)


def test_when_a_worker_stops_renewing_everything_waiting_is_offered_again_at_once(
    session: Session, settings: Settings, form_object: dict[str, Any]
) -> None:
    submission_ids = stored_submissions(session, settings, form_object, 2)
    rows = new_lead_outbox(session, settings, form_object)
    session.execute(update(Submission).where(Submission.id == submission_ids[0]).values(offered_at=utcnow()))
    session.commit()
    announced = utcnow()
    session.add(LiveWorker(name="host:1:killed", started_at=announced, alive_until=announced + WORKER_LEASE))
    session.commit()
    live = Keeper()
    live.announce_worker("host:2:live")
    now = announced + WORKER_LEASE + timedelta(seconds=1)
    try:
        live.renew(now)

        found = sweep(session, now, stale_after=STALE)
        next_pass = sweep(session, now + timedelta(seconds=5), stale_after=STALE)
    finally:
        live.stop()

    assert found.dead_workers == 1
    assert found.submission_ids == submission_ids and found.outbox_ids == sorted(rows.values())
    assert (next_pass.count, next_pass.dead_workers) == (0, 0)


def test_stale_work_is_left_alone_while_messages_wait_in_the_broker_and_offered_once_the_queue_has_drained(
    session: Session, settings: Settings, form_object: dict[str, Any]
) -> None:
    waiting = stored_submissions(session, settings, form_object, 2)
    later = utcnow() + STALE + timedelta(seconds=1)

    busy = sweep(session, later, stale_after=STALE, queued=40)
    drained = sweep(session, later + timedelta(seconds=5), stale_after=STALE, queued=0)

    assert busy.submission_ids == [] and drained.submission_ids == waiting


def test_a_row_whose_lease_ran_out_is_offered_even_while_messages_wait_in_the_broker(
    session: Session, settings: Settings, form_object: dict[str, Any]
) -> None:
    ids = new_lead_outbox(session, settings, form_object)
    taken_at = utcnow()
    lease(session, ids[OutboxKind.STAFF_ALERT], taken_at)

    found = sweep(session, taken_at + LEASE + timedelta(seconds=1), stale_after=STALE, queued=40)

    assert found.expired_outbox_ids == [ids[OutboxKind.STAFF_ALERT]] and found.outbox_ids == []


def test_work_handed_out_after_a_worker_died_is_not_offered_again_for_it(
    session: Session, settings: Settings, form_object: dict[str, Any]
) -> None:
    died = utcnow()
    session.add(LiveWorker(name="host:1:killed", started_at=died - WORKER_LEASE, alive_until=died))
    session.commit()
    stored_submissions(session, settings, form_object, 2)  # handed to the broker after the worker's last renewal
    session.execute(update(Submission).values(offered_at=died + timedelta(seconds=1)))
    session.commit()

    found = sweep(session, died + timedelta(seconds=2), stale_after=STALE)

    assert (found.dead_workers, found.count) == (1, 0)


def test_past_the_limit_the_texts_are_offered_before_crm_work(
    session: Session, settings: Settings, form_object: dict[str, Any]
) -> None:
    rows = new_lead_outbox(session, settings, form_object)
    # The CRM sync came due first, as a backlog of CRM work does.
    session.execute(update(OutboxMessage).where(OutboxMessage.id == rows[OutboxKind.CRM_SYNC])
                    .values(next_attempt_at=utcnow() - timedelta(minutes=10)))
    session.commit()

    found = sweep(session, utcnow() + STALE + timedelta(seconds=1), stale_after=STALE, limit=1)

    assert found.outbox_ids == [rows[OutboxKind.STAFF_ALERT]]
