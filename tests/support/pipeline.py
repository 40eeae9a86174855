"""Running entries through the real intake and dedup on a private in-memory SQLite database."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session
from sqlalchemy.pool import StaticPool

from config.settings import Settings
from tests.conftest import EXAMPLES
from worker.intake.entries import register_form, store_entry
from worker.leads.processing import process_submission
from worker.store.db import Base
from worker.store.models import Submission, SubmissionSource


@contextmanager
def scratch_session() -> Iterator[Session]:
    engine = create_engine("sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False})
    Base.metadata.create_all(engine)
    session = Session(engine, expire_on_commit=False)
    try:
        yield session
    finally:
        session.close()
        engine.dispose()


def lead_of_each_entry(entries: Iterable[dict[str, Any]], settings: Settings) -> dict[str, int | None]:
    """Entry id -> the lead it belongs to once all are in (None when flagged), ingesting in the given order."""
    with scratch_session() as session:
        register_form(session, site=settings.site, form_object=json.loads((EXAMPLES / "form.json").read_text()))
        session.commit()
        for entry in entries:
            stored = store_entry(session, site=settings.site, entry=entry, source=SubmissionSource.CLI)
            session.commit()
            process_submission(session, stored.submission_id, settings)
            session.commit()
        rows = session.execute(select(Submission.entry_id, Submission.lead_id))
        return {entry_id: lead_id for entry_id, lead_id in rows}
