"""Building the admissions world in a test: settings wired for Twilio, services with a recording messenger, leads
made through the real pipeline, and fixed moments on the example roster's shifts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.orm import Session

from config.settings import Settings
from integrations.crm import CRM, CallbackTaskSpec, LogOnlyCRM
from tests.conftest import REPO, make_entry
from tests.fakes.twilio import AUTH_TOKEN, CENTER_NUMBER, PUBLIC_URL, RecordingMessenger
from worker.intake.entries import register_form, store_entry
from worker.leads.processing import process_submission
from worker.staff.roster import load_roster
from worker.staff.services import Services
from worker.staff.templates import AlertTemplates
from worker.store.models import OutboxKind, OutboxMessage, SubmissionSource

NEW_YORK = ZoneInfo("America/New_York")
EXAMPLE_ROSTER = REPO / "config" / "roster.example.toml"
AVERY, BLAKE, CASEY, DANA = "+16175550101", "+16175550102", "+16175550103", "+16175550104"


def twilio_settings(settings: Settings, **overrides: Any) -> Settings:
    """The test settings with Twilio configured and a public URL, so webhooks and reminder calls work."""
    return settings.model_copy(update={
        "twilio_account_sid": "AC" + "0" * 32, "twilio_auth_token": SecretStr(AUTH_TOKEN),
        "twilio_from_number": CENTER_NUMBER, "public_url": PUBLIC_URL, **overrides,
    })


def alert_services(
    settings: Settings, messenger: RecordingMessenger | None = None, crm: CRM | None = None,
    templates: AlertTemplates | None = None,
) -> Services:
    return Services(settings, crm or LogOnlyCRM(), messenger or RecordingMessenger(), load_roster(EXAMPLE_ROSTER),
                    templates or AlertTemplates())


def next_weekday_morning() -> datetime:
    """Next Monday 10:00 in New York (as UTC): the example roster's weekday day shift, when Avery is on call,
    Blake second and Dana supervisor. In the future, so outbox rows created now are already due then."""
    today = datetime.now(UTC).date()
    monday = today + timedelta(days=7 - today.weekday())
    return datetime(monday.year, monday.month, monday.day, 10, 0, tzinfo=NEW_YORK).astimezone(UTC)


def new_lead(
    session: Session, settings: Settings, form_object: dict[str, Any], entry_id: int = 1, **fields: Any
) -> dict[str, int]:
    """Store and process one entry through the real pipeline; returns its outbox row ids by kind."""
    register_form(session, site=settings.site, form_object=form_object)
    stored = store_entry(session, site=settings.site, entry=make_entry(entry_id, **fields),
                         source=SubmissionSource.CLI)
    session.commit()
    outcome = process_submission(session, stored.submission_id, settings)
    session.commit()
    rows = session.scalars(select(OutboxMessage).where(OutboxMessage.id.in_(outcome.outbox_ids))).all()
    return {OutboxKind(row.kind): row.id for row in rows}


class NoteRecordingCRM(LogOnlyCRM):
    """The log-only CRM, keeping every note and callback task it is given."""

    def __init__(self) -> None:
        self.notes: list[tuple[str, str]] = []
        self.tasks: list[tuple[str, CallbackTaskSpec]] = []

    def add_note(self, contact_id: str, text: str, at: datetime, *, look_first: bool = False) -> str:
        self.notes.append((contact_id, text))
        return super().add_note(contact_id, text, at, look_first=look_first) + f"-{len(self.notes)}"

    def ensure_callback_task(self, contact_id: str, task: CallbackTaskSpec) -> str:
        self.tasks.append((contact_id, task))
        return super().ensure_callback_task(contact_id, task)
