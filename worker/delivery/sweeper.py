"""Finding stored work that no live worker holds, and offering it again: a worker that died, a lost task message,
a broker that lost its data.

- An outbox row whose lease ran out: its worker died (a live one renews its leases), so it is offered at once.
- A worker whose row in `live_workers` ran out died holding task messages the broker hides for an hour: every
  submission still `received` and every due outbox row no one leases, handed out while it lived, is offered at
  once.
- Otherwise, once the broker's queue has drained, work handed to it more than `stale_after` ago and still waiting
  is offered again: its message was lost (a broker that lost its data, a send that failed). While messages wait in
  the queue, the work may be among them: a backlog is not sent twice.

Every offer stamps `offered_at` in the statement that finds the row, so the next pass does not find it again.
Offering twice is harmless anyway: processing and delivery are idempotent (docs/idempotency.md).
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
    """What to hand to workers again: `expired_outbox_ids` were being worked on when their worker died, so they
    are overdue and go ahead of any backlog."""

    submission_ids: list[int]
    outbox_ids: list[int]
    expired_outbox_ids: list[int]
    dead_workers: int = 0

    @property
    def count(self) -> int:
        return len(self.submission_ids) + len(self.outbox_ids) + len(self.expired_outbox_ids)


def sweep(session: Session, now: datetime, *, stale_after: timedelta, queued: int | None = 0,
          limit: int = 500) -> Stale:
    """Find the work to offer again and mark it offered. `queued`: the task messages waiting in the broker's queue
    (None: it could not say, and stale work is offered again). Commits."""
    dead = forget_dead_workers(session, now)
    if dead:
        log.warning("%d worker(s) stopped renewing their leases (killed?): offering their work again", len(dead))
    expired = expired_outbox_ids(session, now, limit=limit)
    outbox_ids: list[int] = []
    submission_ids: list[int] = []
    if dead or not queued:
        offered_before = max([now - stale_after, *dead])
        outbox_ids = due_outbox_ids(session, now, offered_before=offered_before, limit=limit)
        submission_ids = offer_received(session, now, offered_before=offered_before, limit=limit)
    session.commit()
    return Stale(submission_ids, outbox_ids, expired, len(dead))


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
