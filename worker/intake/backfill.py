"""Importing a form's history through the same pipeline as live entries, a page at a time, resumably."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from integrations.gravityforms.client import PAGE_SIZE, GravityFormsClient
from worker.intake.entries import RejectedEntry, entry_meta, register_form, store_entries
from worker.store.db import utcnow
from worker.store.models import BackfillRun, SubmissionSource


@dataclass
class BackfillPage:
    total: int
    stored_ids: list[int] = field(default_factory=list)
    already_seen: int = 0
    skipped: int = 0
    finished: bool = False


def start(session: Session, *, site: str, form_id: str, since: datetime) -> BackfillRun:
    """The run for (site, form, since): a new one, or the interrupted one to resume."""
    run = session.scalar(
        select(BackfillRun).where(BackfillRun.site == site, BackfillRun.form_id == form_id, BackfillRun.since == since)
    )
    if run is None:
        run = BackfillRun(site=site, form_id=form_id, since=since, next_page=1, imported=0, started_at=utcnow())
        session.add(run)
        session.commit()
    return run


def import_page(session: Session, run: BackfillRun, client: GravityFormsClient) -> BackfillPage:
    """Store the run's next page of entries (oldest first) and move the run on, in one commit: interrupted, the
    run resumes at this page, and entries stored already are seen again, not stored twice."""
    if run.next_page == 1:
        register_form(session, site=run.site, form_object=client.get_form(run.form_id))
        session.commit()
    # The API's start_date is a day in the site's time zone: ask a day early, then compare exact UTC times.
    page = client.entries_page(run.form_id, page=run.next_page, newest_first=False, since=run.since - timedelta(days=1))
    result = BackfillPage(total=page.total_count)
    wanted = []
    for entry in page.entries:
        try:
            created = entry_meta(entry).date_created
        except RejectedEntry:
            result.skipped += 1
            continue
        if created is not None and created < run.since:
            result.skipped += 1
            continue
        wanted.append(entry)
    for stored in store_entries(session, site=run.site, entries=wanted, source=SubmissionSource.BACKFILL):
        if stored.created:
            result.stored_ids.append(stored.submission_id)
        else:
            result.already_seen += 1
    run.next_page += 1
    run.imported += len(result.stored_ids)
    if len(page.entries) < PAGE_SIZE:
        run.finished_at = utcnow()
        result.finished = True
    session.commit()
    return result
