from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from config.settings import Settings
from integrations.crm import LogOnlyCRM
from integrations.errors import IntegrationError, ServiceUnavailable
from tests.conftest import REPO, make_entry
from tests.fakes.twilio import RecordingMessenger
from tests.worker.leads.test_processing import ingest
from worker.delivery.outbox import deliver
from worker.intake.entries import register_form
from worker.staff.roster import load_roster
from worker.staff.services import Services
from worker.store.models import Lead, OutboxKind, OutboxMessage, OutboxState

# What TwilioMessenger says when Twilio refuses a recipient (error 21211), worded for a staff phone.
REFUSED_RECIPIENT = IntegrationError(
    "Twilio 21211: the staff number ending in 42 is not a valid phone number; fix the staff phone in ROSTER_FILE",
    permanent=True, status=400,
)


def acknowledgement(session: Session, settings: Settings, form_object: dict[str, Any],
                    failure: IntegrationError) -> tuple[OutboxMessage, Lead]:
    enabled = settings.model_copy(update={"person_ack_sms": True, "twilio_from_number": "+18555550100"})
    register_form(session, site=settings.site, form_object=form_object)
    ingest(session, enabled, make_entry(1, **{"6.1": "Yes"}))
    row = session.scalars(select(OutboxMessage).where(OutboxMessage.kind == OutboxKind.PERSON_ACK)).one()
    roster = load_roster(REPO / "config/roster.example.toml")
    deliver(session, row.id, Services(enabled, LogOnlyCRM(), RecordingMessenger(sms_failures=[failure]), roster))
    return session.get_one(OutboxMessage, row.id, populate_existing=True), session.scalars(select(Lead)).one()


def test_a_refused_acknowledgement_is_parked_without_the_persons_digits_or_blaming_the_roster(
    session: Session, settings: Settings, form_object: dict[str, Any]
) -> None:
    row, lead = acknowledgement(session, settings, form_object, REFUSED_RECIPIENT)

    assert row.state == OutboxState.DEAD
    assert row.last_error is not None and row.last_error.startswith(
        f"dead: refused for good: Twilio refused the acknowledgement text for lead {lead.ref} (HTTP 400); it is not "
        "sent"
    )
    assert "42" not in row.last_error.replace(lead.ref, "") and "ROSTER_FILE" not in row.last_error


def test_a_transient_acknowledgement_failure_is_retried_as_it_was(
    session: Session, settings: Settings, form_object: dict[str, Any]
) -> None:
    failure = ServiceUnavailable("Twilio answered 503; will retry", status=503)

    row, _ = acknowledgement(session, settings, form_object, failure)

    assert row.state == OutboxState.PENDING and row.last_error == "Twilio answered 503; will retry"
