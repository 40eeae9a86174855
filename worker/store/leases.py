"""Leases that follow the life of the process holding them.

A lease is a time in a row (an outbox row's `leased_until`, a lead's `crm_lease_until`, a form's `next_poll_at`
while it is polled) saying "being worked on until then". Leases are short (`WORK_LEASE`), and the keeper of the
process that holds them, a daemon thread, pushes them forward every `RENEW_EVERY` in one UPDATE per table, so work
that runs long keeps its lease while a process that dies stops renewing: its leases run out within one lease
length, and an expired lease is proof its holder is gone (docs/idempotency.md).

A worker's main process also keeps a row in `live_workers`: task messages it had taken from the broker but not
started are invisible to other workers until the broker's visibility timeout (an hour), so the sweeper re-offers
the stored work at once when a worker's row runs out (worker/delivery/sweeper.py).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, delete, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import InstrumentedAttribute, Session

from worker.store.db import session_scope, utcnow
from worker.store.models import Lead, LiveWorker, OutboxMessage, PollCursor

log = logging.getLogger(__name__)

# A lease on work: long enough to ride out a few missed renewals (a busy database), short enough that work a dead
# process held is free again well within the 30 s a staff alert may wait after a worker is back.
WORK_LEASE = timedelta(seconds=15)
# A worker's own row: a live worker wrongly taken for dead costs only work offered twice (processing is idempotent).
WORKER_LEASE = timedelta(seconds=10)
RENEW_EVERY = timedelta(seconds=2)


@dataclass(frozen=True)
class LeaseKind:
    """A column holding leases: renewed only while still live, so a lease given up or taken over is left alone."""

    name: str
    until: InstrumentedAttribute[datetime | None] | InstrumentedAttribute[datetime]
    key: InstrumentedAttribute[int]

    def renew(self, session: Session, ids: list[int], now: datetime) -> None:
        # A row locked by a transaction still open (one of this process's own: a lease taken and not yet committed)
        # is skipped, never waited for: it is renewed next round.
        live: ColumnElement[bool] = self.until > now
        free = select(self.key).where(self.key.in_(ids), live).with_for_update(skip_locked=True)
        session.execute(update(self.until.class_).where(self.key.in_(free))
                        .values({self.until.key: now + WORK_LEASE}).execution_options(synchronize_session=False))


OUTBOX = LeaseKind("outbox", OutboxMessage.leased_until, OutboxMessage.id)
LEAD_CRM = LeaseKind("lead CRM", Lead.crm_lease_until, Lead.id)
POLL = LeaseKind("poll", PollCursor.next_poll_at, PollCursor.id)


class Keeper:
    """The leases this process holds, renewed by a daemon thread started with the first one."""

    def __init__(self) -> None:
        self._held: dict[LeaseKind, dict[int, int]] = {}  # kind -> id -> the thread that holds it
        self._worker: str | None = None
        self._lock = threading.Lock()  # held while renewing: once `release` returns, no renewal of it is in flight
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def hold(self, kind: LeaseKind, ids: Iterable[int]) -> None:
        """Keep renewing these leases (just taken and committed) until `release`."""
        me = threading.get_ident()
        with self._lock:
            self._held.setdefault(kind, {}).update((each, me) for each in ids)
        self._start()

    def release(self, kind: LeaseKind, ids: Iterable[int] | None = None) -> None:
        """Stop renewing these leases, or with no ids every lease of `kind` the calling thread holds."""
        me = threading.get_ident()
        with self._lock:
            held = self._held.get(kind, {})
            for each in [each for each, owner in held.items() if owner == me] if ids is None else ids:
                held.pop(each, None)

    def held(self, kind: LeaseKind) -> set[int]:
        with self._lock:
            return set(self._held.get(kind, {}))

    def announce_worker(self, name: str) -> None:
        """Record this process as a live worker, renewed like a lease until `stop`."""
        with session_scope() as session:
            _upsert_worker(session, name, utcnow())
        with self._lock:
            self._worker = name
        self._start()

    def renew(self, now: datetime | None = None) -> None:
        """One round: push every held lease (and this worker's row) forward, one UPDATE per kind. Commits."""
        with self._lock:
            if self._worker is None and not any(self._held.values()):
                return
            now = now or utcnow()
            with session_scope() as session:
                for kind, held in self._held.items():
                    if held:
                        kind.renew(session, sorted(held), now)
                if self._worker is not None:
                    session.execute(update(LiveWorker).where(LiveWorker.name == self._worker)
                                    .values(alive_until=now + WORKER_LEASE))

    def stop(self) -> None:
        """Stop renewing and forget what is held; a worker's row is removed (a clean stop re-queues the messages it
        had not started)."""
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
        with self._lock:
            name, self._worker, self._thread, self._held = self._worker, None, None, {}
        if name is not None:
            try:
                with session_scope() as session:
                    session.execute(delete(LiveWorker).where(LiveWorker.name == name))
            except DBAPIError as exc:  # a worker stopping while the database is away
                log.warning("could not remove this worker's row (%s): it runs out within %ss, and then the sweeper "
                            "offers again what the worker held", type(exc).__name__,
                            int(WORKER_LEASE.total_seconds()))

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._wake.clear()
            self._thread = threading.Thread(target=self._run, name="admitflow-lease-keeper", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._wake.wait(RENEW_EVERY.total_seconds()):
            try:
                self.renew()
            except Exception as exc:  # a database hiccup: the next round tries again
                log.warning("could not renew this process's leases (%s); retrying in %ss", type(exc).__name__,
                            RENEW_EVERY.total_seconds())

    def _forget_after_fork(self) -> None:
        """A forked child inherits the parent's registry but not its thread: it starts with nothing held."""
        self._held, self._worker, self._thread = {}, None, None
        self._lock, self._wake = threading.Lock(), threading.Event()


def _upsert_worker(session: Session, name: str, now: datetime) -> None:
    if session.get(LiveWorker, name) is None:
        session.add(LiveWorker(name=name, started_at=now, alive_until=now + WORKER_LEASE))
    else:
        session.execute(update(LiveWorker).where(LiveWorker.name == name).values(alive_until=now + WORKER_LEASE))


def worker_name() -> str:
    """Host, pid and a random part: a restarted container has the same host name and often the same pid."""
    return f"{socket.gethostname()[:200]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def forget_dead_workers(session: Session, now: datetime) -> list[datetime]:
    """Remove the rows of workers that stopped renewing (killed, or their host gone); returns when each was last
    known to live (its row's `alive_until`): only work handed out before then can be in its hands."""
    return list(session.scalars(delete(LiveWorker).where(LiveWorker.alive_until < now)
                                .returning(LiveWorker.alive_until)))


keeper = Keeper()
os.register_at_fork(after_in_child=keeper._forget_after_fork)
