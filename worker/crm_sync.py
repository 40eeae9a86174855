"""Putting a lead into the CRM as a contact, a note per request and one callback task."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from config.settings import Settings
from integrations.crm import CRM, CallbackTaskSpec, CallRecord, ContactCard
from integrations.errors import IntegrationError
from integrations.gravityforms.mapping import ApplicantFields
from worker.best_time import call_time_of
from worker.models import Claim, Lead, OutboxMessage, Submission
from worker.normalize import clean_text
from worker.processing import applicant_fields, message_text
from worker.roster import Roster

LEAD_LEASE = timedelta(minutes=2)


class LeadBusy(IntegrationError):
    """Another worker is syncing the same lead: try again in a moment, without counting it as a failure."""

    def __init__(self, lead_id: int) -> None:
        super().__init__(f"lead {lead_id} is being synced by another worker; will retry", permanent=False)


def lease_lead(session: Session, lead_id: int, now: datetime) -> None:
    """Take the lead's CRM lease or raise `LeadBusy`. Commits."""
    taken = session.execute(
        update(Lead)
        .where(Lead.id == lead_id, or_(Lead.crm_lease_until.is_(None), Lead.crm_lease_until < now))
        .values(crm_lease_until=now + LEAD_LEASE)
    )
    session.commit()
    if taken.rowcount != 1:  # type: ignore[attr-defined]
        raise LeadBusy(lead_id)


def release_lead(session: Session, lead_id: int) -> None:
    session.execute(update(Lead).where(Lead.id == lead_id).values(crm_lease_until=None))
    session.commit()


def contact_card(lead: Lead, submission: Submission) -> ContactCard:
    return ContactCard(
        lead_ref=lead.ref,
        first_name=lead.first_name,
        last_name=lead.last_name,
        email=lead.email,
        phone=lead.phone,
        repeat_count=lead.repeat_count,
        source=f"{submission.site}/form {submission.form_id}",
        consent_to_text=lead.consent_to_text,
        consent=lead.consent,
    )


def note_text(lead: Lead, submission: Submission, fields: ApplicantFields) -> str | None:
    """What the person told us in this request, for the contact's timeline; None when they said nothing."""
    lines = []
    if fields.best_time:
        lines.append(f"Best time to call: {clean_text(fields.best_time)}")
    if fields.for_whom:
        lines.append(f"Asking for: {clean_text(fields.for_whom)}")
    message = message_text(fields)
    if message:
        lines.extend(["", message] if lines else [message])
    if not lines:
        return None
    header = f"Website request {lead.ref} (form {submission.form_id}, entry {submission.entry_id}):"
    return "\n".join([header, "", *lines])


def callback_task(lead: Lead, owner_id: str | None, due_at: datetime) -> CallbackTaskSpec:
    answer = {True: "yes", False: "no", None: "not asked"}
    urgency = "HIGH PRIORITY: asked again within hours. " if lead.priority == "high" else ""
    return CallbackTaskSpec(
        lead_ref=lead.ref,
        subject=f"Callback {lead.ref}",
        body=(
            f"{urgency}Confidential callback requested through the website (lead {lead.ref}). "
            f"Repeat requests: {lead.repeat_count}. Consented to be contacted: {answer[lead.consent]}. "
            f"OK to text: {answer[lead.consent_to_text]}."
        ),
        owner_id=owner_id,
        due_at=due_at,
    )


def sync_lead(
    session: Session, row: OutboxMessage, crm: CRM, roster: Roster, settings: Settings, now: datetime
) -> None:
    """Contact, then note, then task, committing each id as it comes back, so a retry resumes after the last
    step that succeeded instead of creating a second record. Holds the lead's lease throughout."""
    lease_lead(session, row.lead_id, now)
    try:
        _sync(session, row, crm, roster, settings, now)
    finally:
        session.rollback()
        release_lead(session, row.lead_id)


def _sync(
    session: Session, row: OutboxMessage, crm: CRM, roster: Roster, settings: Settings, now: datetime
) -> None:
    lead = session.get_one(Lead, row.lead_id, populate_existing=True)
    submission = session.get_one(Submission, row.submission_id)

    if lead.crm_contact_id is not None and submission.crm_note_id is not None:
        contact_id = lead.crm_contact_id  # a retry: this request updated the contact before its note went in
    else:
        contact_id = crm.upsert_contact(contact_card(lead, submission), lead.crm_contact_id)
        if lead.crm_contact_id != contact_id:
            lead.crm_contact_id = contact_id
            _progressed(session, row)

    fields = applicant_fields(session, submission, settings)
    note = note_text(lead, submission, fields) if fields else None
    if submission.crm_note_id is None and note:
        submission.crm_note_id = crm.add_note(contact_id, note, submission.received_at)
        _progressed(session, row)

    if lead.crm_task_id is None:
        # A lead claimed before its task exists gets it owned by the claimer; otherwise the on-call person.
        claim = session.scalar(select(Claim).where(Claim.lead_id == lead.id))
        owner = claim.crm_owner_id if claim else roster.on_call_staff(now)[0].crm_owner_id
        due = call_time_of(session, submission, settings) or now
        lead.crm_task_id = crm.ensure_callback_task(contact_id, callback_task(lead, owner, due))
        _progressed(session, row)


def _progressed(session: Session, row: OutboxMessage) -> None:
    """Commit a step that went through. The row's attempts then count tries since the last step that succeeded:
    a sync that moves forward through a flaky CRM is not failing, so it neither backs off for long nor goes dead."""
    row.attempts = 1
    session.commit()


def assign_claimed_task(session: Session, row: OutboxMessage, crm: CRM) -> None:
    """Give the lead's callback task to the staff member who claimed the lead. The task may not exist yet (the
    CRM sync runs concurrently): then this retries, and a task created after the claim is owned by the claimer."""
    claim = session.scalar(select(Claim).where(Claim.lead_id == row.lead_id))
    if claim is None or claim.crm_owner_id is None:
        return
    lead = session.get_one(Lead, row.lead_id, populate_existing=True)
    if lead.crm_task_id is None:
        raise IntegrationError(f"lead {lead.ref} has no CRM task yet; will retry after its CRM sync",
                               permanent=False)
    crm.assign_callback_task(lead.crm_task_id, claim.crm_owner_id)


def log_bridged_call(session: Session, row: OutboxMessage, crm: CRM) -> None:
    """Put the connected bridged call on the contact's timeline and close the callback task. Waits (retries)
    until the lead's CRM sync has created the contact."""
    claim = session.scalar(select(Claim).where(Claim.lead_id == row.lead_id))
    lead = session.get_one(Lead, row.lead_id, populate_existing=True)
    if claim is None or claim.bridged_at is None:
        return
    if lead.crm_contact_id is None:
        raise IntegrationError(f"lead {lead.ref} has no CRM contact yet; will retry after its CRM sync",
                               permanent=False)
    record = CallRecord(lead.ref, claim.bridged_at, claim.bridge_seconds, claim.crm_owner_id)
    crm.log_call(lead.crm_contact_id, lead.crm_task_id, record)
