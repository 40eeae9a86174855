"""The lease keeper: leases a process holds are pushed forward while it lives, and run out soon after it dies."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from config.settings import Settings
from tests.worker.delivery.test_outbox import new_lead_outbox, services
from worker.delivery.outbox import LEASE, deliver, lease
from worker.store import leases
from worker.store.db import new_session, utcnow
from worker.store.leases import OUTBOX, WORK_LEASE, WORKER_LEASE, Keeper, forget_dead_workers
from worker.store.models import Lead, LiveWorker, OutboxKind, OutboxMessage


def test_a_held_lease_is_pushed_forward_by_each_renewal(
    session: Session, settings: Settings, form_object: dict[str, Any]
) -> None:
    ids = new_lead_outbox(session, settings, form_object)
    taken_at = utcnow()
    row = lease(session, ids[OutboxKind.STAFF_ALERT], taken_at)
    assert row is not None and row.leased_until == taken_at + LEASE
    keeper = Keeper()
    keeper.hold(OUTBOX, [row.id])
    later = taken_at + LEASE - timedelta(seconds=1)  # a renewal just before the lease ends

    keeper.renew(later)

    session.expire_all()
    assert session.get_one(OutboxMessage, row.id).leased_until == later + WORK_LEASE
    keeper.stop()


def test_a_lease_given_up_or_run_out_is_not_renewed(
    session: Session, settings: Settings, form_object: dict[str, Any]
) -> None:
    ids = new_lead_outbox(session, settings, form_object)
    alert, sync = ids[OutboxKind.STAFF_ALERT], ids[OutboxKind.CRM_SYNC]
    taken_at = utcnow()
    assert lease(session, alert, taken_at) is not None and lease(session, sync, taken_at) is not None
    session.get_one(OutboxMessage, alert).leased_until = None  # its outcome was recorded
    session.commit()
    keeper = Keeper()
    keeper.hold(OUTBOX, [alert, sync])

    keeper.renew(taken_at + LEASE + timedelta(seconds=1))  # the keeper itself was stalled past the lease

    session.expire_all()
    assert session.get_one(OutboxMessage, alert).leased_until is None
    assert session.get_one(OutboxMessage, sync).leased_until == taken_at + LEASE
    keeper.stop()


def test_release_without_ids_gives_up_only_the_calling_threads_leases() -> None:
    keeper = Keeper()
    keeper.hold(OUTBOX, [1, 2])
    other = threading.Thread(target=keeper.hold, args=(OUTBOX, [3]))
    other.start()
    other.join()

    keeper.release(OUTBOX)

    assert keeper.held(OUTBOX) == {3}
    keeper.stop()


def test_a_lead_crm_lease_is_renewed_while_its_sync_holds_it(
    session: Session, settings: Settings, form_object: dict[str, Any]
) -> None:
    from worker.delivery.crm_sync import lease_lead, release_lead
    from worker.store.leases import LEAD_CRM, keeper

    new_lead_outbox(session, settings, form_object)
    lead_id = session.scalars(select(Lead.id)).one()
    lease_lead(session, lead_id, utcnow())
    assert keeper.held(LEAD_CRM) == {lead_id}

    release_lead(session, lead_id)

    assert keeper.held(LEAD_CRM) == set()


def test_a_worker_is_live_while_it_renews_and_forgotten_once_it_stops(session: Session, settings: Settings) -> None:
    keeper = Keeper()
    keeper.announce_worker("host:1:abc")
    now = utcnow()
    keeper.renew(now)

    assert forget_dead_workers(session, now + WORKER_LEASE - timedelta(seconds=1)) == []
    assert forget_dead_workers(session, now + WORKER_LEASE + timedelta(seconds=1)) == [now + WORKER_LEASE]
    session.commit()
    assert session.scalars(select(LiveWorker)).all() == []
    keeper.stop()


def test_a_clean_stop_removes_the_workers_row(session: Session, settings: Settings) -> None:
    keeper = Keeper()
    keeper.announce_worker("host:2:def")

    keeper.stop()

    assert session.scalars(select(LiveWorker)).all() == []


def test_a_stop_while_the_database_is_away_leaves_the_row_to_run_out_with_a_warning(
    session: Session, settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    keeper = Keeper()
    keeper.announce_worker("host:3:ghi")

    @contextmanager
    def database_away() -> Iterator[Session]:
        raise OperationalError("DELETE FROM live_workers", {}, Exception("the database system is shutting down"))
        yield session

    monkeypatch.setattr(leases, "session_scope", database_away)
    with caplog.at_level(logging.WARNING, logger="worker.store.leases"):
        keeper.stop()  # Celery's worker_shutdown while PostgreSQL restarts: no traceback out of the signal

    assert "could not remove this worker's row (OperationalError): it runs out within 10s" in caplog.text
    assert [row.name for row in session.scalars(select(LiveWorker))] == ["host:3:ghi"]


def test_a_crm_sync_that_succeeds_holds_no_lease_after_it(
    session: Session, settings: Settings, form_object: dict[str, Any]
) -> None:
    from worker.store.leases import LEAD_CRM, keeper

    ids = new_lead_outbox(session, settings, form_object)

    deliver(session, ids[OutboxKind.CRM_SYNC], services(settings), batches=False)

    assert keeper.held(LEAD_CRM) == set() and keeper.held(OUTBOX) == set()


@pytest.mark.services
def test_a_renewal_skips_a_row_locked_by_a_transaction_still_open(
    pg_settings: Settings, form_object: dict[str, Any]
) -> None:
    with new_session() as session:
        ids = new_lead_outbox(session, pg_settings, form_object)
        taken_at = utcnow()
        assert lease(session, ids[OutboxKind.STAFF_ALERT], taken_at) is not None
    keeper = Keeper()
    keeper.hold(OUTBOX, [ids[OutboxKind.STAFF_ALERT]])
    with new_session() as holder:
        holder.execute(select(OutboxMessage).where(OutboxMessage.id == ids[OutboxKind.STAFF_ALERT])
                       .with_for_update())  # a lease taken, its transaction not yet committed
        renewal = threading.Thread(target=keeper.renew, args=(taken_at + timedelta(seconds=5),))
        renewal.start()
        renewal.join(timeout=5)
        waited = renewal.is_alive()
        holder.rollback()
    renewal.join()
    keeper.stop()
    assert not waited, "the renewal waited on a row lock, holding the keeper's lock meanwhile"


def test_a_crm_sync_cut_short_by_the_database_going_away_holds_no_lease_after_it(
    session: Session, settings: Settings, form_object: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL shutting down mid-sync fails the rollback too: the lead's lease must still stop being renewed,
    or every later sync of the lead waits on a lead "busy" for as long as the worker lives."""
    from sqlalchemy.exc import OperationalError

    import worker.delivery.crm_sync as crm_sync
    from worker.store.leases import LEAD_CRM, keeper

    ids = new_lead_outbox(session, settings, form_object)
    gone = OperationalError("COMMIT", {}, Exception("the database system is shutting down"))

    def database_gone(*args: Any, **kwargs: Any) -> None:
        raise gone

    monkeypatch.setattr(crm_sync, "_sync", database_gone)
    rollback, failed_once = session.rollback, []

    def rollback_fails_once() -> None:
        if not failed_once:
            failed_once.append(True)
            raise gone
        rollback()

    monkeypatch.setattr(session, "rollback", rollback_fails_once)

    outcome = deliver(session, ids[OutboxKind.CRM_SYNC], services(settings), batches=False)

    assert failed_once and outcome.retry_in is not None
    assert keeper.held(LEAD_CRM) == set() and keeper.held(OUTBOX) == set()
