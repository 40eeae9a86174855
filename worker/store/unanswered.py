""""May a first attempt have gone through?" as a fact recorded on the outbox row, never guessed from a counter.

Before a create whose answer could be lost (a CRM contact, note, task or call log; the person's acknowledgement
text), the row is marked with what it is sending and when, and the mark is committed. The mark is cleared when the
vendor's answer gives the record's id, or when the vendor refused in a way that says nothing was written (a 429, a
400); a timeout, a reset or a 5xx leaves it, and so does a crash. Whichever row retries the work (a lead's task may
be retried by its repeat request's row) looks for a marked record before creating it, once the vendor's search can
see it. docs/idempotency.md has the table of every create.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from integrations.crm import CRM, LookupFailed
from integrations.errors import IntegrationError, RateLimited
from worker.store.db import utcnow
from worker.store.models import OutboxKind, OutboxMessage

# Creates that belong to the lead, not to one request: any of the lead's CRM syncs may retry them.
LEAD_STEPS = frozenset({"contact", "task"})


class Deferred(IntegrationError):
    """Not a failure: the row is due again in `retry_in`, without spending its retry budget."""

    def __init__(self, message: str, retry_in: timedelta) -> None:
        super().__init__(message, permanent=False)
        self.retry_in = retry_in


class LeadBusy(Deferred):
    """Another worker is syncing the same lead: try again in a moment."""

    def __init__(self, lead_id: int) -> None:
        jitter = timedelta(seconds=random.uniform(0.5, 2.0))  # noqa: S311 (jitter, not security)
        super().__init__(f"lead {lead_id} is being synced by another worker; will retry", jitter)


class WaitForIndex(Deferred):
    """A create whose answer was lost is looked for only once the vendor's search can see it."""

    def __init__(self, step: str, retry_in: timedelta) -> None:
        super().__init__(f"the {step} sent earlier got no answer; looking for it once the CRM's search has caught "
                         f"up (in {retry_in.total_seconds():.0f}s)", retry_in)


def unanswered_since(session: Session, row: OutboxMessage, step: str) -> datetime | None:
    """When a create of `step` for this row's request (for a contact or task: for its lead, by any of the lead's
    rows) was last sent without an answer, or None when nothing is in doubt."""
    return unanswered_since_each(session, [row], step)[row.id]


def unanswered_since_each(session: Session, rows: Sequence[OutboxMessage], step: str) -> dict[int, datetime | None]:
    """`unanswered_since` for many rows (by row id), in one query at most."""
    if step not in LEAD_STEPS or not rows:
        return {row.id: row.unanswered_at if row.unanswered == step else None for row in rows}
    # Without a flush: marks are committed as they are set, so what waits in the session (a step answered, its own
    # mark cleared) cannot change which rows hold a mark for this later step; it goes out with the next commit.
    with session.no_autoflush:
        latest = {(lead_id, kind): at for lead_id, kind, at in session.execute(
            select(OutboxMessage.lead_id, OutboxMessage.kind, func.max(OutboxMessage.unanswered_at))
            .where(OutboxMessage.lead_id.in_({row.lead_id for row in rows}),
                   OutboxMessage.kind.in_({row.kind for row in rows}), OutboxMessage.unanswered == step)
            .group_by(OutboxMessage.lead_id, OutboxMessage.kind))}
    return {row.id: latest.get((row.lead_id, row.kind)) for row in rows}


def look_first(session: Session, row: OutboxMessage, step: str, crm: CRM, timeout: float, now: datetime) -> bool:
    """Whether to look for an earlier `step` before creating it; raises `WaitForIndex` while a lookup could still
    miss it (the request may have been written up to `timeout` after it was sent, and the CRM's search trails
    writes by its lag)."""
    return must_look(unanswered_since(session, row, step), step, crm, timeout, now)


def must_look(since: datetime | None, step: str, crm: CRM, timeout: float, now: datetime) -> bool:
    """`look_first` for a create of `step` last sent without an answer at `since` (None: nothing in doubt)."""
    if since is None:
        return False
    wait = since + timedelta(seconds=timeout + crm.lookup_lag_seconds(step)) - now
    if wait > timedelta(0):
        raise WaitForIndex(step, wait)
    return True


def answered(session: Session, rows: Sequence[OutboxMessage], step: str, *, commit: bool = True,
             others: bool = True) -> None:
    """The vendor answered with the record: nothing of `step` is in doubt for these rows (or their leads) now,
    and each made progress. For a lead's step, the marks the lead's other rows hold are cleared too, unless
    `others` is false (the caller looked and found none). Commits, unless `commit` is false: then the caller's next
    commit (the next step's mark, before its call) records it with the record's id."""
    now = utcnow()
    for row in rows:
        row.progressed_at = now
        if row.unanswered == step:
            row.unanswered, row.unanswered_at = None, None
    if others and step in LEAD_STEPS and rows:
        session.execute(update(OutboxMessage).where(
            OutboxMessage.lead_id.in_({row.lead_id for row in rows}), OutboxMessage.kind == OutboxKind.CRM_SYNC,
            OutboxMessage.unanswered == step).values(unanswered=None, unanswered_at=None))
    if commit:
        session.commit()


def refused_before_writing(error: IntegrationError) -> bool:
    """A 429, a refusal for the data (400, 409...) or a failed look before the create: nothing was written. A
    timeout or a 5xx may follow a write that went through."""
    return error.permanent or isinstance(error, RateLimited | LookupFailed)


@contextmanager
def sending(session: Session, rows: Sequence[OutboxMessage], step: str) -> Iterator[None]:
    """Mark `rows` as sending a create of `step` (committed before the call), for the block that calls the vendor.
    If the vendor refused before writing, each row's earlier mark is put back: a look-first search refused with a
    429 leaves the doubt of the attempt before it in place. If it failed otherwise, the mark is stamped again with
    the time the call gave up (`gave_up`): the write, if any, happened before then, and a call held back on its way
    out (a rate limit's pause, a vendor slow to read its queue) may have been written long after the mark."""
    before = {row.id: (row.unanswered, row.unanswered_at) for row in rows}
    now = utcnow()
    for row in rows:
        row.unanswered, row.unanswered_at = step, now
    session.commit()
    try:
        yield
    except IntegrationError as exc:
        if refused_before_writing(exc):
            restore(session, rows, before)
        else:
            gave_up(session, rows, step)
        raise


def gave_up(session: Session, rows: Sequence[OutboxMessage], step: str) -> None:
    """Stamp the marks of `rows` whose create of `step` failed without saying whether it was written with now, the
    time the call gave up. Commits (what the session holds too)."""
    session.commit()
    if rows:
        session.execute(update(OutboxMessage).where(
            OutboxMessage.id.in_([row.id for row in rows]), OutboxMessage.unanswered == step,
        ).values(unanswered_at=utcnow()))
        session.commit()


def restore(session: Session, rows: Sequence[OutboxMessage],
            before: dict[int, tuple[str | None, datetime | None]]) -> None:
    """Put back the marks rows had before a call the vendor refused before writing. Commits (what the session holds
    too)."""
    session.commit()
    for row in rows:
        session.execute(update(OutboxMessage).where(OutboxMessage.id == row.id).values(
            unanswered=before[row.id][0], unanswered_at=before[row.id][1]))
    session.commit()
