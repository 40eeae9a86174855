"""Polling Gravity Forms: the net under the webhook.

Each configured form is read back to its cursor (the newest `date_created` seen) minus an overlap window, and every
entry goes through the same door as webhooks, so an entry seen both ways is stored and processed once. A failing
site backs off and says why in `admitflow poll status`; it never stops the other forms.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from config.settings import Settings
from config.sites import SiteConfig
from integrations.errors import IntegrationError
from integrations.gravityforms.client import GravityFormsClient
from worker.intake.entries import register_form, store_entry
from worker.store.db import utcnow
from worker.store.leases import POLL, WORK_LEASE, keeper
from worker.store.models import FormDefinition, PollCursor, SubmissionSource

log = logging.getLogger(__name__)

FORM_REFRESH = timedelta(hours=1)
MAX_BACKOFF = timedelta(minutes=30)
# A form being polled is claimed this long, renewed while the poll runs: a poll that dies frees it this soon.
POLL_LEASE = WORK_LEASE


@dataclass
class PollResult:
    site: str
    form_id: str
    seen: int = 0
    new_submission_ids: list[int] = field(default_factory=list)
    released_submission_ids: list[int] = field(default_factory=list)
    error: str | None = None


def client_for(site: SiteConfig, settings: Settings) -> GravityFormsClient:
    assert site.base_url and site.consumer_key and site.consumer_secret
    return GravityFormsClient(
        site.base_url, site.consumer_key, site.consumer_secret, timeout=settings.http_timeout_seconds
    )


def _cursor(session: Session, site: str, form_id: str, now: datetime) -> PollCursor:
    row = session.scalar(select(PollCursor).where(PollCursor.site == site, PollCursor.form_id == form_id))
    if row is None:
        row = PollCursor(site=site, form_id=form_id, next_poll_at=now)
        session.add(row)
        session.flush()
    return row


def claim_due_forms(session: Session, sites: list[SiteConfig], now: datetime) -> list[tuple[SiteConfig, str]]:
    """The (site, form) pairs due for a poll, each claimed for this poller so two never poll one form at once."""
    due: list[tuple[SiteConfig, str]] = []
    for site in sites:
        if not site.can_poll:
            continue
        for form in site.forms:
            cursor_id = _cursor(session, site.name, form.id, now).id
            session.commit()
            claimed = session.execute(
                update(PollCursor)
                .where(PollCursor.id == cursor_id, PollCursor.next_poll_at <= now)
                .values(next_poll_at=now + POLL_LEASE)
            )
            session.commit()
            if claimed.rowcount == 1:  # type: ignore[attr-defined]
                keeper.hold(POLL, [cursor_id])
                due.append((site, form.id))
    return due


def refresh_form(
    session: Session, site: SiteConfig, form_id: str, client: GravityFormsClient, now: datetime
) -> list[int]:
    """Fetch the form object when we have none or ours is an hour old; returns submissions it released."""
    fetched_at = session.scalar(
        select(FormDefinition.updated_at).where(FormDefinition.site == site.name, FormDefinition.form_id == form_id)
    )
    if fetched_at is not None and now - fetched_at < FORM_REFRESH:
        return []
    definition, released = register_form(session, site=site.name, form_object=client.get_form(form_id))
    definition.updated_at = now
    session.commit()
    return released


def poll_form(
    session: Session,
    site: SiteConfig,
    form_id: str,
    client: GravityFormsClient,
    settings: Settings,
    now: datetime | None = None,
) -> PollResult:
    """Store every entry of the form newer than the cursor minus the overlap. Commits as it goes."""
    now = now or utcnow()
    result = PollResult(site.name, form_id)
    cursor = _cursor(session, site.name, form_id, now)
    start = cursor.cursor or now - timedelta(hours=settings.poll_first_lookback_hours)
    cutoff = start - timedelta(minutes=settings.poll_overlap_minutes)
    newest = cursor.cursor
    try:
        result.released_submission_ids = refresh_form(session, site, form_id, client, now)
        for polled in client.entries_since(form_id, cutoff):
            stored = store_entry(session, site=site.name, entry=polled.entry, source=SubmissionSource.POLL)
            session.commit()
            result.seen += 1
            if stored.created:
                result.new_submission_ids.append(stored.submission_id)
            created = polled.meta.date_created
            if created is not None and (newest is None or created > newest):
                newest = created
    except IntegrationError as exc:
        session.rollback()
        result.error = exc.message
    keeper.release(POLL, [cursor.id])  # before the next poll time is written, which a renewal would overwrite
    _record(session, result, newest, settings, now)
    return result


def _record(session: Session, result: PollResult, newest: datetime | None, settings: Settings, now: datetime) -> None:
    cursor = _cursor(session, result.site, result.form_id, now)
    cursor.last_polled_at = now
    cursor.entries_seen += result.seen
    cursor.entries_new += len(result.new_submission_ids)
    # Entries stored before a failure still advance the cursor: each was committed as it came.
    if newest is not None and (cursor.cursor is None or newest > cursor.cursor):
        cursor.cursor = newest
    interval = timedelta(seconds=settings.poll_interval_seconds)
    if result.error is None:
        cursor.last_success_at, cursor.consecutive_failures, cursor.last_error = now, 0, None
        cursor.next_poll_at = now + interval
    else:
        cursor.consecutive_failures += 1
        cursor.last_error = result.error[:1000]
        cursor.next_poll_at = now + min(interval * 2 ** min(cursor.consecutive_failures, 10), MAX_BACKOFF)
        log.warning(
            "polling %s form %s failed (%d in a row), next try at %s: %s", result.site, result.form_id,
            cursor.consecutive_failures, cursor.next_poll_at.isoformat(timespec="seconds"), result.error,
        )
    session.commit()


def poll_status(session: Session) -> list[PollCursor]:
    return list(session.scalars(select(PollCursor).order_by(PollCursor.site, PollCursor.form_id)))


def run_due_polls(session: Session, sites: list[SiteConfig], settings: Settings) -> list[PollResult]:
    """Poll every form that is due; each result lists the submissions to hand on for processing."""
    try:
        return [
            poll_form(session, site, form_id, client_for(site, settings), settings)
            for site, form_id in claim_due_forms(session, sites, utcnow())
        ]
    finally:
        keeper.release(POLL)
