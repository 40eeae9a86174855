"""Putting a lead into the CRM as a contact, a note per request and one callback task."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from config.settings import Settings
from integrations.crm import CRM, BatchCRM, BatchResult, CallbackTaskSpec, CallRecord, ContactCard, NoteSpec
from integrations.errors import Conflict, IntegrationError, InvalidRequest
from integrations.gravityforms.mapping import ApplicantFields
from worker.intake.normalize import clean_text
from worker.leads.best_time import call_time_of
from worker.leads.processing import applicant_fields, message_text
from worker.staff.roster import Roster
from worker.store.models import Claim, Lead, LeadStatus, OutboxMessage, Submission

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


def contact_card(lead: Lead, submission: Submission, shared: Shared | None = None) -> ContactCard:
    email_holder, sharing = shared or (None, False)
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
        email_shared_with=email_holder,
        match_existing=not sharing,
    )


# (the lead that reached this lead's inbox first, if another did; whether a record found by this lead's email, else
# phone, could be another person's)
Shared = tuple[str | None, bool]


def shared_identity(session: Session, leads: list[Lead]) -> dict[int, Shared]:
    """For each lead, what it shares with other live leads (other people: dedup keeps one person in one lead), in
    one query. One CRM record per lead, always: the inbox's address goes to the lead that had it first, and no
    lead is attached to a record found by an address or (having no address) a phone another lead shares."""
    phones = {lead.phone_index for lead in leads if lead.phone_index}
    emails = {lead.email_index for lead in leads if lead.email_index}
    if not phones and not emails:
        return {}
    others = session.execute(select(Lead.id, Lead.ref, Lead.phone_index, Lead.email_index).where(
        or_(Lead.phone_index.in_(phones), Lead.email_index.in_(emails)), Lead.status != LeadStatus.MERGED,
    ).order_by(Lead.id)).all()
    shared: dict[int, Shared] = {}
    for lead in leads:
        holder = next((other.ref for other in others if other.id < lead.id and lead.email_index
                       and other.email_index == lead.email_index), None)
        phone_shared = any(other.id != lead.id and lead.phone_index and other.phone_index == lead.phone_index
                           for other in others)
        shared[lead.id] = (holder, holder is not None or (phone_shared and not lead.email_index))
    return shared


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
    return "\n".join([note_header(lead, submission), "", *lines])


def note_header(lead: Lead, submission: Submission) -> str:
    """The note's first line: names the request, so the note can be found again on its contact."""
    return f"Website request {lead.ref} (form {submission.form_id}, entry {submission.entry_id}):"


def callback_task(lead: Lead, owner_id: str | None, due_at: datetime,
                  email_shared_with: str | None = None) -> CallbackTaskSpec:
    answer = {True: "yes", False: "no", None: "not asked"}
    urgency = "HIGH PRIORITY: asked again within hours. " if lead.priority == "high" else ""
    inbox = (f" Shares an email inbox with lead {email_shared_with} (another person): the address is on that "
             "lead's record." if email_shared_with else "")
    return CallbackTaskSpec(
        lead_ref=lead.ref,
        subject=f"Callback {lead.ref}",
        body=(
            f"{urgency}Confidential callback requested through the website (lead {lead.ref}). "
            f"Repeat requests: {lead.repeat_count}. Consented to be contacted: {answer[lead.consent]}. "
            f"OK to text: {answer[lead.consent_to_text]}.{inbox}"
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
    # Leased before, with the contact known: an earlier attempt may have added the note and lost the answer.
    doubtful = row.attempts > 1 and lead.crm_contact_id is not None

    if lead.crm_contact_id is not None and submission.crm_note_id is not None:
        contact_id = lead.crm_contact_id  # a retry: this request updated the contact before its note went in
    else:
        card = contact_card(lead, submission, shared_identity(session, [lead]).get(lead.id))
        contact_id = crm.upsert_contact(card, lead.crm_contact_id)
        if lead.crm_contact_id != contact_id:
            lead.crm_contact_id = contact_id
            _progressed(session, row)

    fields = applicant_fields(session, submission, settings)
    note = note_text(lead, submission, fields) if fields else None
    if submission.crm_note_id is None and note:
        submission.crm_note_id = crm.add_note(contact_id, note, submission.received_at, look_first=doubtful)
        _progressed(session, row)

    if lead.crm_task_id is None:
        lead.crm_task_id = crm.ensure_callback_task(contact_id, _task_for(session, lead, submission, roster,
                                                                          settings, now))
        _progressed(session, row)


def _task_for(session: Session, lead: Lead, submission: Submission, roster: Roster, settings: Settings,
              now: datetime) -> CallbackTaskSpec:
    # A lead claimed before its task exists gets it owned by the claimer; otherwise the on-call person.
    claim = session.scalar(select(Claim).where(Claim.lead_id == lead.id))
    owner = claim.crm_owner_id if claim else roster.on_call_staff(now)[0].crm_owner_id
    due = call_time_of(session, submission, settings) or now
    holder, _ = shared_identity(session, [lead]).get(lead.id, (None, False))
    return callback_task(lead, owner, due, holder)


def lease_leads(session: Session, lead_ids: list[int], now: datetime) -> set[int]:
    """Take the CRM lease of every lead that is free; returns those taken. Commits."""
    taken = session.scalars(
        update(Lead)
        .where(Lead.id.in_(lead_ids), or_(Lead.crm_lease_until.is_(None), Lead.crm_lease_until < now))
        .values(crm_lease_until=now + LEAD_LEASE)
        .returning(Lead.id)
    ).all()
    session.commit()
    return set(taken)


def sync_batch(
    session: Session, rows: list[OutboxMessage], crm: BatchCRM, roster: Roster, settings: Settings, now: datetime
) -> dict[int, IntegrationError]:
    """`sync_lead` for many leased rows (one per lead) in three batch calls: contacts, notes, tasks, committing the
    ids of each call before the next. Returns the error of each row that did not get through; the others are done.

    A row leased more than once may have had records created by an attempt whose answer never came (a timeout, a
    crash before the commit): for those, notes and tasks are looked up before any is created. A call refused for
    its data (400, 409) is redone lead by lead, so one bad record neither blocks nor hides the others.
    """
    leased = lease_leads(session, [row.lead_id for row in rows], now)
    errors: dict[int, IntegrationError] = {row.id: LeadBusy(row.lead_id) for row in rows if row.lead_id not in leased}
    try:
        _sync_many(session, [row for row in rows if row.id not in errors], crm, roster, settings, now, errors)
    finally:
        session.rollback()
        session.execute(update(Lead).where(Lead.id.in_(leased)).values(crm_lease_until=None))
        session.commit()
    return errors


BatchItem = tuple[OutboxMessage, Lead, Submission]


@dataclass
class _Batch:
    """The rows of one batch sync as it goes: which failed (and why), which were synced on their own instead."""

    items: list[BatchItem]
    errors: dict[int, IntegrationError]
    solo: Callable[[BatchItem], None]
    alone: set[int] = field(default_factory=set)

    def going(self) -> list[BatchItem]:
        return [item for item in self.items if item[0].id not in self.errors and item[0].id not in self.alone]

    def step(self, session: Session, todo: list[BatchItem], key: Callable[[BatchItem], str],
             call: Callable[[list[BatchItem]], BatchResult]) -> list[tuple[BatchItem, str]]:
        """One batch call over `todo`; returns (item, id) for the items it did. A call refused for its data is
        redone item by item; any other failure is every item's."""
        if not todo:
            return []
        try:
            result = call(todo)
        except (InvalidRequest, Conflict):
            self._alone(session, todo)
            return []
        except IntegrationError as exc:
            self.errors.update((item[0].id, exc) for item in todo)
            return []
        done = []
        for item in todo:
            if key(item) in result.ids:
                item[0].attempts = 1  # progress, as in `_progressed`
                done.append((item, result.ids[key(item)]))
            elif isinstance(refused := result.errors.get(key(item)), InvalidRequest | Conflict):
                self._alone(session, [item])
            else:
                self.errors[item[0].id] = refused or IntegrationError(
                    "the CRM's batch answer did not mention this lead; will retry", permanent=False)
        return done

    def _alone(self, session: Session, items: list[BatchItem]) -> None:
        for item in items:
            try:
                self.solo(item)
            except IntegrationError as exc:
                session.rollback()
                self.errors[item[0].id] = exc
            else:
                self.alone.add(item[0].id)


def _sync_many(
    session: Session, rows: list[OutboxMessage], crm: BatchCRM, roster: Roster, settings: Settings, now: datetime,
    errors: dict[int, IntegrationError],
) -> None:
    items = [(row, session.get_one(Lead, row.lead_id, populate_existing=True),
              session.get_one(Submission, row.submission_id)) for row in rows]
    # A row leased before may have had notes or tasks created by an attempt whose answer never came, but only
    # past the contact step: an attempt creates nothing for a lead before its contact id is stored.
    doubtful = [(lead, sub) for row, lead, sub in items if row.attempts > 1 and lead.crm_contact_id]
    batch = _Batch(items, errors, lambda item: _sync(session, item[0], crm, roster, settings, now))

    def upsert(todo: list[BatchItem]) -> BatchResult:
        shared = shared_identity(session, [lead for _, lead, _ in todo])
        return crm.upsert_contacts([(contact_card(lead, sub, shared.get(lead.id)), lead.crm_contact_id)
                                    for _, lead, sub in todo])

    need = [item for item in batch.going() if not (item[1].crm_contact_id and item[2].crm_note_id)]
    for (_, lead, _), contact_id in batch.step(session, need, lambda item: item[1].ref, upsert):
        lead.crm_contact_id = contact_id
    session.commit()

    notes: dict[str, NoteSpec] = {}
    for _, lead, sub in batch.going():
        fields = applicant_fields(session, sub, settings) if sub.crm_note_id is None else None
        text = note_text(lead, sub, fields) if fields else None
        if text and lead.crm_contact_id:
            notes[_note_key(sub)] = NoteSpec(_note_key(sub), lead.crm_contact_id, text, sub.received_at,
                                             note_header(lead, sub))

    def add(todo: list[BatchItem]) -> BatchResult:
        return crm.add_notes([notes[_note_key(sub)] for _, _, sub in todo],
                             look_first={_note_key(sub) for _, sub in doubtful})

    need = [item for item in batch.going() if _note_key(item[2]) in notes]
    for (_, _, sub), note_id in batch.step(session, need, lambda item: _note_key(item[2]), add):
        sub.crm_note_id = note_id
    session.commit()

    need = [item for item in batch.going() if item[1].crm_task_id is None and item[1].crm_contact_id]
    tasks = {lead.ref: (lead.crm_contact_id or "", _task_for(session, lead, sub, roster, settings, now))
             for _, lead, sub in need}

    def create(todo: list[BatchItem]) -> BatchResult:
        return crm.ensure_callback_tasks([tasks[lead.ref] for _, lead, _ in todo],
                                         look_first={lead.ref for lead, _ in doubtful})

    for (_, lead, _), task_id in batch.step(session, need, lambda item: item[1].ref, create):
        lead.crm_task_id = task_id
    session.commit()


def _note_key(submission: Submission) -> str:
    return f"note-{submission.id}"


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
