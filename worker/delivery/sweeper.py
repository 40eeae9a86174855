"""Finding work that was stored but never picked up: a lost task message, a broker that lost its data."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from worker.delivery.outbox import due_outbox_ids
from worker.store.models import Submission, SubmissionState


@dataclass(frozen=True)
class Stale:
    submission_ids: list[int]
    outbox_ids: list[int]


def sweep(session: Session, now: datetime, *, stale_after: timedelta, limit: int = 500) -> Stale:
    cutoff = now - stale_after
    submissions = session.scalars(
        select(Submission.id)
        .where(Submission.state == SubmissionState.RECEIVED, Submission.received_at <= cutoff)
        .order_by(Submission.received_at)
        .limit(limit)
    )
    return Stale(list(submissions), due_outbox_ids(session, now, due_before=cutoff, limit=limit))
