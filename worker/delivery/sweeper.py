"""Finding stored work that no live worker holds, and offering it again: a worker that died, a lost task message,
a broker that lost its data.

- An outbox row whose lease ran out: its worker died (a live one renews its leases), so it is offered at once.
- A worker whose row in `live_workers` ran out died holding task messages the broker hides for an hour: every
  submission still `received` and every due outbox row no one leases is offered at once.
- Otherwise work is offered again when nothing happened to it for `stale_after`: a message lost in the broker.

Every offer stamps `offered_at` in the statement that finds the row, so a backlog waiting in the broker is offered
again at most once per `stale_after`, not on every pass. Offering twice is harmless: processing and delivery are
idempotent (docs/idempotency.md).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from worker.delivery.outbox import due_outbox_ids, expired_outbox_ids
from worker.store.leases import forget_dead_workers
from worker.store.models import Submission, SubmissionState

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stale:
    submission_ids: list[int]
    outbox_ids: list[int]
    dead_workers: int = 0


def sweep(session: Session, now: datetime, *, stale_after: timedelta, limit: int = 500) -> Stale:
    """Find the work to offer again and mark it offered. Commits."""
    dead = forget_dead_workers(session, now)
    if dead:
        log.warning("%d worker(s) stopped renewing their leases (killed?): offering their work again", len(dead))
    offered_before = now if dead else now - stale_after
    expired = expired_outbox_ids(session, now, limit=limit)
    outbox_ids = expired + due_outbox_ids(session, now, offered_before=offered_before, limit=limit - len(expired))
    submission_ids = offer_received(session, now, offered_before=offered_before, limit=limit)
    session.commit()
    return Stale(submission_ids, outbox_ids, len(dead))


def offer_received(session: Session, now: datetime, *, offered_before: datetime, limit: int) -> list[int]:
    """Submissions still `received` that were last offered before `offered_before`, oldest first, stamped as
    offered now. Does not commit."""
    oldest = (select(Submission.id)
              .where(Submission.state == SubmissionState.RECEIVED, Submission.offered_at < offered_before)
              .order_by(Submission.offered_at).limit(limit).with_for_update(skip_locked=True))
    found = session.scalars(update(Submission).where(Submission.id.in_(oldest.scalar_subquery()))
                            .values(offered_at=now).returning(Submission.id)
                            .execution_options(synchronize_session=False))
    return sorted(found)
