from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from config.settings import Settings
from integrations.crm import CallbackTaskSpec, LogOnlyCRM
from tests.conftest import make_entry
from tests.worker.delivery.test_outbox import RecordingMessenger, services
from worker.delivery.outbox import deliver
from worker.intake.entries import register_form, store_entry
from worker.leads.best_time import requested_call_time
from worker.leads.processing import process_submission
from worker.store.models import EscalationTimer, OutboxKind, OutboxMessage, Submission, SubmissionSource

CENTER = ZoneInfo("America/New_York")


def local(year: int, month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=CENTER).astimezone(UTC)


@pytest.mark.parametrize(
    ("answer", "asked_at", "call_at"),
    [
        ("Evening (5-9 pm)", local(2026, 11, 20, 10), local(2026, 11, 20, 17)),
        ("Evening (5-9 pm)", local(2026, 11, 20, 18), None),
        ("Evening (5-9 pm)", local(2026, 11, 20, 22), local(2026, 11, 21, 17)),
        ("Morning", local(2026, 11, 20, 14), local(2026, 11, 21, 9)),
        ("Afternoon", local(2026, 11, 20, 8), local(2026, 11, 20, 12)),
        ("7pm", local(2026, 11, 20, 8), local(2026, 11, 20, 19)),
        ("2026-11-28", local(2026, 11, 20, 8), local(2026, 11, 28, 9)),
        ("2026-11-28 06:30 pm", local(2026, 11, 20, 8), local(2026, 11, 28, 18, 30)),
        ("11/28/2026", local(2026, 11, 20, 8), local(2026, 11, 28, 9)),
        ("2026-11-01", local(2026, 11, 20, 8), None),
        ("Anytime", local(2026, 11, 20, 8), None),
        ("", local(2026, 11, 20, 8), None),
        ("2026-02-31", local(2026, 11, 20, 8), None),
    ],
)
def test_it_reads_when_the_person_asked_to_be_called_in_the_centers_time_zone(
    answer: str, asked_at: datetime, call_at: datetime | None
) -> None:
    assert requested_call_time(answer, asked_at, CENTER) == call_at


@dataclass
class TaskRecordingCRM(LogOnlyCRM):
    tasks: list[CallbackTaskSpec] = field(default_factory=list)

    def ensure_callback_task(self, contact_id: str, task: CallbackTaskSpec) -> str:
        self.tasks.append(task)
        return super().ensure_callback_task(contact_id, task)


BEST_TIME = {"id": 7, "type": "select", "label": "Best time to call",
             "choices": [{"text": "Evening (5-9 pm)", "value": "Evening (5-9 pm)"}]}


@pytest.mark.parametrize("processed", ["now", "before call_from was kept", "then its form changed"])
def test_an_evening_request_makes_the_crm_task_due_and_the_reminder_fire_in_the_evening(
    session: Session, settings: Settings, form_object: dict[str, Any], processed: str
) -> None:
    register_form(session, site=settings.site, form_object={**form_object, "fields": [*form_object["fields"],
                                                                                      BEST_TIME]})
    asked_at = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)  # 10:00 in New York
    entry = make_entry(1, date_created=asked_at.strftime("%Y-%m-%d %H:%M:%S"), **{"7": "Evening (5-9 pm)"})
    stored = store_entry(session, site=settings.site, entry=entry, source=SubmissionSource.CLI)
    session.commit()
    process_submission(session, stored.submission_id, settings)
    session.commit()
    if processed == "before call_from was kept":  # an earlier version processed it: its form is read again
        session.execute(update(Submission).values(call_from=None))
    elif processed == "then its form changed":  # what the person asked was read when it was processed
        register_form(session, site=settings.site, form_object=form_object)
    session.commit()
    for row in session.scalars(select(OutboxMessage)):
        row.next_attempt_at = asked_at
    session.commit()
    rows = {row.kind: row.id for row in session.scalars(select(OutboxMessage))}
    crm, messenger = TaskRecordingCRM(), RecordingMessenger()

    deliver(session, rows[OutboxKind.CRM_SYNC], services(settings, crm=crm), now=asked_at)
    deliver(session, rows[OutboxKind.STAFF_ALERT], services(settings, messenger=messenger), now=asked_at)

    evening = local(2026, 11, 20, 17)
    assert [task.due_at for task in crm.tasks] == [evening]
    assert len(messenger.sent) == 1, "staff are still told at once"
    assert session.scalars(select(EscalationTimer)).one().due_at == evening
