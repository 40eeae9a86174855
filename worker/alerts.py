"""Telling admissions staff that someone is waiting for a callback, without a word of PHI in the message."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from integrations.errors import IntegrationError
from integrations.messaging import Messenger
from worker.models import Lead, OutboxMessage, StaffAlert, Submission
from worker.roster import Roster


def alert_body(lead_ref: str, *, repeat: bool) -> str:
    """The staff SMS. Only the lead reference and whether it is a repeat request: never name, number or message."""
    kind = "REPEAT confidential callback request" if repeat else "New confidential callback request"
    return f"admitflow: {kind} {lead_ref}. Open CRM task \"Callback {lead_ref}\" and call back now."


def alert_staff(session: Session, row: OutboxMessage, messenger: Messenger, roster: Roster, now: datetime) -> None:
    """Text the first on-call staff member about the lead, recording the attempt whatever its outcome."""
    lead = session.get_one(Lead, row.lead_id)
    submission = session.get_one(Submission, row.submission_id)
    on_call = roster.on_call_staff(now)
    if not on_call:
        raise IntegrationError("nobody is on call in the roster: add staff to ROSTER_FILE", permanent=True)
    staff = on_call[0]
    body = alert_body(lead.ref, repeat=submission.is_repeat)
    attempt = StaffAlert(
        lead_id=lead.id, outbox_id=row.id, staff_name=staff.name, staff_phone=staff.phone, body=body,
        status="sending", created_at=now,
    )
    session.add(attempt)
    try:
        sent = messenger.send_sms(staff.phone, body)
    except IntegrationError as exc:
        attempt.status, attempt.error = "failed", exc.message
        session.commit()
        raise
    attempt.status, attempt.provider_id = sent.status, sent.sid
