"""Speed-to-lead rows at controlled times: a lead, its submission, its alert outbox row, texts and a claim."""

from __future__ import annotations

from datetime import datetime, timedelta
from itertools import count

from sqlalchemy.orm import Session

from worker.store.models import (
    Claim,
    Lead,
    LeadStatus,
    OutboxKind,
    OutboxMessage,
    OutboxState,
    StaffAlert,
    Submission,
    SubmissionSource,
    SubmissionState,
)

_entry_ids = count(1000)


def alerted_lead(
    session: Session, ref: str, submitted_at: datetime, *, alert_after: timedelta = timedelta(seconds=20),
    alert_status: str = "delivered", source: SubmissionSource = SubmissionSource.WEBHOOK,
    phone: str | None = "+16175550142",
) -> Lead:
    """A lead whose person submitted at `submitted_at` (through the form, or `source`) and whose on-call staff
    member was texted `alert_after` later. Fictional data only."""
    lead = Lead(ref=ref, status=LeadStatus.NEW, created_at=submitted_at, last_request_at=submitted_at, phone=phone)
    session.add(lead)
    session.flush()
    submission = Submission(
        site="main", form_id="1", entry_id=str(next(_entry_ids)), source=source,
        received_at=submitted_at, requested_at=submitted_at, payload={"1.3": "Sample"},
        state=SubmissionState.PROCESSED, processed_at=submitted_at, lead_id=lead.id,
    )
    session.add(submission)
    session.flush()
    alert_at = submitted_at + alert_after
    outbox = OutboxMessage(kind=OutboxKind.STAFF_ALERT, lead_id=lead.id, submission_id=submission.id,
                           state=OutboxState.DELIVERED, attempts=1, created_at=submitted_at, delivered_at=alert_at)
    session.add(outbox)
    session.flush()
    session.add(StaffAlert(lead_id=lead.id, outbox_id=outbox.id, staff_name="Avery Example", staff_phone="+16175550101",
                           body=f"admitflow: New confidential callback request {ref}.", provider_id=f"SM{ref}",
                           status=alert_status, created_at=alert_at))
    session.flush()
    return lead


def claimed_lead(
    session: Session, ref: str, submitted_at: datetime, staff_name: str, *, claim_after: timedelta,
    call_after: timedelta | None = None, source: SubmissionSource = SubmissionSource.WEBHOOK,
) -> Lead:
    """An alerted lead that `staff_name` claimed `claim_after` the submission and, when `call_after` is given,
    reached on a bridged call then."""
    lead = alerted_lead(session, ref, submitted_at, source=source)
    lead.status = LeadStatus.CLAIMED
    session.add(Claim(
        lead_id=lead.id, staff_id=staff_name.split()[0].lower(), staff_name=staff_name, staff_phone="+16175550101",
        channel="sms", submitted_at=submitted_at, first_alert_at=submitted_at + timedelta(seconds=20),
        claimed_at=submitted_at + claim_after,
        bridge_status="completed" if call_after is not None else None,
        bridged_at=submitted_at + call_after if call_after is not None else None,
    ))
    session.flush()
    return lead
