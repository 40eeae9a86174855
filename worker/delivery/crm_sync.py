"""Putting a lead into the CRM as a contact, a note per request and one callback task.

Each step commits its result as it comes back, so a retry resumes at the first unfinished step; each create is
marked as sent before the call (worker/delivery/unanswered.py), so a retry whose first attempt lost its answer
looks for the record instead of creating a second one.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from config.settings import Settings
from integrations.crm import CRM, BatchCRM, BatchResult, CallbackTaskSpec, CallRecord, NoteSpec, note_room
from integrations.errors import Conflict, IntegrationError, InvalidRequest
from worker.delivery.crm_note import REQUESTED_THROUGH, contact_card, note_header, note_text, request_details
from worker.leads.processing import FormReader, call_time_of
from worker.staff.alerts import can_call_back
from worker.staff.roster import Roster
from worker.store.db import utcnow
from worker.store.leases import LEAD_CRM, WORK_LEASE, keeper
from worker.store.models import Claim, Lead, LeadStatus, OutboxMessage, PhoneCall, Submission
from worker.store.unanswered import (
    Deferred,
    LeadBusy,
    WaitForIndex,
    answered,
    gave_up,
    look_first,
    must_look,
    refused_before_writing,
    restore,
    sending,
    unanswered_since_each,
)

LEAD_LEASE = WORK_LEASE  # renewed while the sync runs (worker/store/leases.py)

__all__ = ["Deferred", "LeadBusy", "assign_claimed_task", "log_bridged_call", "sync_batch", "sync_lead"]


def lease_lead(session: Session, lead_id: int, now: datetime, *, commit: bool = True) -> None:
    """Take the lead's CRM lease or raise `LeadBusy`. Commits, unless `commit` is false: then the caller commits
    before it calls the CRM."""
    taken = session.execute(
        update(Lead)
        .where(Lead.id == lead_id, or_(Lead.crm_lease_until.is_(None), Lead.crm_lease_until < now))
        .values(crm_lease_until=now + LEAD_LEASE)
    )
    if commit or taken.rowcount != 1:  # type: ignore[attr-defined]
        session.commit()
    if taken.rowcount != 1:  # type: ignore[attr-defined]
        raise LeadBusy(lead_id)
    keeper.hold(LEAD_CRM, [lead_id])


def release_lead(session: Session, lead_id: int, *, commit: bool = True) -> None:
    """Give up the lead's CRM lease. Commits, unless `commit` is false: then the caller's commit releases it."""
    keeper.release(LEAD_CRM, [lead_id])
    loaded = session.get(Lead, lead_id) if not commit else None  # in the session: one UPDATE with its other changes
    if loaded is not None:
        loaded.crm_lease_until = None
    else:
        session.execute(update(Lead).where(Lead.id == lead_id).values(crm_lease_until=None))
    if commit:
        session.commit()


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
    by_email: dict[str, list[tuple[int, str]]] = {}  # oldest lead first
    by_phone: dict[str, set[int]] = {}
    for other in others:
        if other.email_index:
            by_email.setdefault(other.email_index, []).append((other.id, other.ref))
        if other.phone_index:
            by_phone.setdefault(other.phone_index, set()).add(other.id)
    shared: dict[int, Shared] = {}
    for lead in leads:
        lead_id, email, phone = lead.id, lead.email_index, lead.phone_index
        holder = next((ref for other_id, ref in by_email.get(email, ()) if other_id < lead_id), None) if email else None
        phone_shared = bool(phone) and any(other_id != lead_id for other_id in by_phone.get(phone or "", ()))
        shared[lead_id] = (holder, holder is not None or (phone_shared and not email))
    return shared


def callback_task(lead: Lead, owner_id: str | None, due_at: datetime, through: str = "the website",
                  email_shared_with: str | None = None) -> CallbackTaskSpec:
    answer = {True: "yes", False: "no", None: "not asked"}
    urgency = "HIGH PRIORITY: asked again within hours. " if lead.priority == "high" else ""
    no_phone = "" if lead.phone else " No phone number we could read: see the request's note for what was typed."
    inbox = (f" Shares an email inbox with lead {email_shared_with} (another person): the address is on that "
             "lead's record." if email_shared_with else "")
    return CallbackTaskSpec(
        lead_ref=lead.ref,
        subject=f"Callback {lead.ref}",
        body=(
            f"{urgency}Confidential callback requested through {through} (lead {lead.ref}). "
            f"Repeat requests: {lead.repeat_count}. Consented to be contacted: {answer[lead.consent]}. "
            f"OK to text: {answer[lead.consent_to_text]}.{no_phone}{inbox}"
        ),
        owner_id=owner_id,
        due_at=due_at,
    )


def sync_lead(
    session: Session, row: OutboxMessage, crm: CRM, roster: Roster, settings: Settings, now: datetime
) -> None:
    """Contact, then note, then task, each id committed before the next call goes out (with the next step's
    mark), so a retry resumes after the last step that succeeded instead of creating a second record. Holds the
    lead's lease throughout.

    The lease is committed with the first mark before the first CRM call; on success, the last id and the lease's
    release are left to the caller's commit (the delivery's outcome): a crash before it leaves the lease to run out
    and the last step marked, so the retry looks for its record."""
    lease_lead(session, row.lead_id, now, commit=False)
    try:
        _sync(session, row, crm, roster, settings, now)
    except IntegrationError:
        session.commit()  # the ids the vendor gave before this failure (every call's mark is committed already)
        release_lead(session, row.lead_id)
        raise
    except BaseException:
        session.rollback()
        release_lead(session, row.lead_id)
        raise
    release_lead(session, row.lead_id, commit=False)


def _sync(
    session: Session, row: OutboxMessage, crm: CRM, roster: Roster, settings: Settings, now: datetime
) -> None:
    lead = session.get_one(Lead, row.lead_id, populate_existing=True)
    submission = session.get_one(Submission, row.submission_id)
    timeout = settings.http_timeout_seconds
    forms = FormReader(session, settings)
    details = request_details(session, submission, settings, forms)
    shared: list[Shared | None] = []

    def sharing() -> Shared | None:
        if not shared:
            shared.append(shared_identity(session, [lead]).get(lead.id))
        return shared[0]

    if lead.crm_contact_id is not None and submission.crm_note_id is not None:
        contact_id = lead.crm_contact_id  # a retry: this request updated the contact before its note went in
    elif lead.crm_contact_id is not None and row.progressed_at is not None:
        contact_id = lead.crm_contact_id  # a retry: this request's update of the contact went through before
    elif lead.crm_contact_id is not None:
        card = contact_card(lead, submission, details, sharing())
        session.commit()  # ends the read: no transaction stays open across the call
        contact_id = crm.upsert_contact(card, lead.crm_contact_id)
        # Another row's doubt about creating the contact ended when its id was recorded: it is never read again.
        answered(session, [row], "contact", commit=False, others=False)
    else:
        # The upsert itself looks: only the wait matters, and whether other rows hold marks to clear.
        marked = look_first(session, row, "contact", crm, timeout, now)
        card = contact_card(lead, submission, details, sharing())
        with sending(session, [row], "contact"):
            contact_id = crm.upsert_contact(card, None)
        lead.crm_contact_id = contact_id
        answered(session, [row], "contact", commit=False, others=marked)

    note = note_text(lead, submission, details, note_room(crm)) if details else None
    if submission.crm_note_id is None and note:
        look = look_first(session, row, "note", crm, timeout, now)
        with sending(session, [row], "note"):
            submission.crm_note_id = crm.add_note(contact_id, note, submission.received_at, look_first=look)
        answered(session, [row], "note", commit=False)

    if lead.crm_task_id is None and can_call_back(lead):
        # The task is always looked for: only the wait matters, and whether other rows hold marks to clear.
        marked = look_first(session, row, "task", crm, timeout, now)
        spec = _task_for(session, lead, submission, roster, settings, now, forms, sharing(),
                         claimers(session, [lead.id]))
        with sending(session, [row], "task"):
            lead.crm_task_id = crm.ensure_callback_task(contact_id, spec)
        answered(session, [row], "task", commit=False, others=marked)


def claimers(session: Session, lead_ids: Collection[int]) -> dict[int, str | None]:
    """The CRM owner id of whoever claimed each of these leads that someone claimed, in one query. Read without a
    flush: the sync's pending ids go out with the task's mark, in one UPDATE of the row."""
    with session.no_autoflush:
        return {lead_id: owner for lead_id, owner in session.execute(
            select(Claim.lead_id, Claim.crm_owner_id).where(Claim.lead_id.in_(lead_ids)))}


def _task_for(session: Session, lead: Lead, submission: Submission, roster: Roster, settings: Settings,
              now: datetime, forms: FormReader, shared: Shared | None,
              claimed: dict[int, str | None]) -> CallbackTaskSpec:
    # A lead claimed before its task exists gets it owned by the claimer (`claimers`); otherwise the on-call person.
    owner = claimed[lead.id] if lead.id in claimed else roster.on_call_staff(now)[0].crm_owner_id
    due = call_time_of(session, submission, settings, forms) or now
    holder, _ = shared or (None, False)
    return callback_task(lead, owner, due, REQUESTED_THROUGH.get(submission.source, "the website"), holder)


def lease_leads(session: Session, lead_ids: list[int], now: datetime) -> set[int]:
    """Take the CRM lease of every lead that is free; returns those taken. Commits."""
    taken = session.scalars(
        update(Lead)
        .where(Lead.id.in_(lead_ids), or_(Lead.crm_lease_until.is_(None), Lead.crm_lease_until < now))
        .values(crm_lease_until=now + LEAD_LEASE)
        .returning(Lead.id)
    ).all()
    session.commit()
    keeper.hold(LEAD_CRM, taken)
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
        keeper.release(LEAD_CRM, leased)
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

    def doubtful(self, session: Session, step: str, crm: CRM, timeout: float, now: datetime) -> set[int]:
        """The rows still going whose `step` may have been created unanswered: looked for first. A row whose
        lookup could still miss it waits (`WaitForIndex`) and leaves this batch."""
        doubtful = set()
        going = [row for row, _, _ in self.going()]
        since = unanswered_since_each(session, going, step)
        for row in going:
            try:
                if must_look(since[row.id], step, crm, timeout, now):
                    doubtful.add(row.id)
            except WaitForIndex as wait:
                self.errors[row.id] = wait
        return doubtful

    def step(self, session: Session, todo: list[BatchItem], key: Callable[[BatchItem], str],
             call: Callable[[list[BatchItem]], BatchResult], mark: str | None) -> list[tuple[BatchItem, str]]:
        """One batch call over `todo`, creating `mark` records (marked as sent first; None: writes keyed by our
        own id, safe to send again); returns (item, id) for the items it did. A call refused for its data is redone
        item by item; any other failure is every item's."""
        if not todo:
            return []
        rows = [item[0] for item in todo]
        before = {row.id: (row.unanswered, row.unanswered_at) for row in rows}
        try:
            if mark is None:
                result = call(todo)
            else:
                with sending(session, rows, mark):
                    result = call(todo)
        except (InvalidRequest, Conflict):
            self._alone(session, todo)
            return []
        except IntegrationError as exc:
            self.errors.update((item[0].id, exc) for item in todo)
            return []
        done, untouched = [], []
        for item in todo:
            if key(item) in result.ids:
                done.append((item, result.ids[key(item)]))
                continue
            refused = result.errors.get(key(item))
            if key(item) in result.absent:
                # Looked for once the search could see it, and not there: the earlier doubt is settled, which is
                # progress; only a create of this attempt that may have gone through is in doubt now.
                item[0].progressed_at = utcnow()
                before[item[0].id] = (None, None)
            if refused is not None and refused_before_writing(refused):
                untouched.append(item[0])
            if isinstance(refused, InvalidRequest | Conflict):
                self._alone(session, [item])
            else:
                self.errors[item[0].id] = refused or IntegrationError(
                    "the CRM's batch answer did not mention this lead; will retry", permanent=False)
        if mark is not None:
            restore(session, untouched, before)  # commits the progress of items found absent too
            gave_up(session, [item[0] for item in todo if item[0].id in self.errors and item[0] not in untouched],
                    mark)
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
    # The batch's leads read afresh and its submissions, one statement each.
    leads = {lead.id: lead for lead in session.scalars(
        select(Lead).where(Lead.id.in_({row.lead_id for row in rows})).execution_options(populate_existing=True))}
    submissions = {sub.id: sub for sub in session.scalars(
        select(Submission).where(Submission.id.in_({row.submission_id for row in rows})))}
    items = [(row, leads[row.lead_id], submissions[row.submission_id]) for row in rows]
    batch = _Batch(items, errors, lambda item: _sync(session, item[0], crm, roster, settings, now))
    forms = FormReader(session, settings)
    details = {sub.id: request_details(session, sub, settings, forms) for _, _, sub in items}
    timeout = settings.http_timeout_seconds

    shared = shared_identity(session, [lead for _, lead, _ in items])

    def upsert(todo: list[BatchItem]) -> BatchResult:
        cards = [(contact_card(lead, sub, details[sub.id], shared.get(lead.id)), lead.crm_contact_id)
                 for _, lead, sub in todo]
        session.commit()  # ends the read: no transaction stays open across the call
        result = crm.upsert_contacts(cards)
        for _, lead, _ in todo:
            # A contact found but not written: the retry writes to it without looking again, one call fewer to fail.
            lead.crm_contact_id = result.found.get(lead.ref, lead.crm_contact_id)
        return result

    # Contacts are upserted by the lead reference, a unique property: sending one again updates it, so the row's
    # mark keeps whatever later step (a note) an earlier attempt left in doubt.
    # A row that made progress before has had its contact written (created, or updated with this request's details).
    need = [item for item in batch.going()
            if not (item[1].crm_contact_id and (item[2].crm_note_id or item[0].progressed_at))]
    done = batch.step(session, need, lambda item: item[1].ref, upsert, None)
    for (_, lead, _), contact_id in done:
        lead.crm_contact_id = contact_id
    answered(session, [row for (row, _, _), _ in done], "contact")

    notes: dict[str, NoteSpec] = {}
    for _, lead, sub in batch.going():
        known = details[sub.id] if sub.crm_note_id is None else None
        text = note_text(lead, sub, known, note_room(crm)) if known else None
        if text and lead.crm_contact_id:
            notes[_note_key(sub)] = NoteSpec(_note_key(sub), lead.crm_contact_id, text, sub.received_at,
                                             note_header(lead, sub))
    doubtful = batch.doubtful(session, "note", crm, timeout, now)

    def add(todo: list[BatchItem]) -> BatchResult:
        return crm.add_notes([notes[_note_key(sub)] for _, _, sub in todo],
                             look_first={_note_key(sub) for row, _, sub in todo if row.id in doubtful})

    need = [item for item in batch.going() if _note_key(item[2]) in notes]
    done = batch.step(session, need, lambda item: _note_key(item[2]), add, "note")
    for (_, _, sub), note_id in done:
        sub.crm_note_id = note_id
    answered(session, [row for (row, _, _), _ in done], "note")

    doubtful = batch.doubtful(session, "task", crm, timeout, now)
    need = [item for item in batch.going()
            if item[1].crm_task_id is None and item[1].crm_contact_id and can_call_back(item[1])]
    claimed = claimers(session, [lead.id for _, lead, _ in need]) if need else {}
    tasks = {lead.ref: (lead.crm_contact_id or "",
                        _task_for(session, lead, sub, roster, settings, now, forms, shared.get(lead.id), claimed))
             for _, lead, sub in need}

    def create(todo: list[BatchItem]) -> BatchResult:
        return crm.ensure_callback_tasks([tasks[lead.ref] for _, lead, _ in todo],
                                         look_first={lead.ref for row, lead, _ in todo if row.id in doubtful})

    done = batch.step(session, need, lambda item: item[1].ref, create, "task")
    for (_, lead, _), task_id in done:
        lead.crm_task_id = task_id
    answered(session, [row for (row, _, _), _ in done], "task")


def _note_key(submission: Submission) -> str:
    return f"note-{submission.id}"


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
    session.commit()  # ends the read: no transaction stays open across the call
    crm.assign_callback_task(lead.crm_task_id, claim.crm_owner_id)


def log_bridged_call(session: Session, row: OutboxMessage, crm: CRM, settings: Settings, now: datetime) -> None:
    """Put the connected bridged call on the contact's timeline (its id kept on the row), then close the callback
    task. Waits (retries) until the lead's CRM sync has created the contact."""
    claim = session.scalar(select(Claim).where(Claim.lead_id == row.lead_id))
    lead = session.get_one(Lead, row.lead_id, populate_existing=True)
    if claim is None or claim.bridged_at is None:
        return
    if lead.crm_contact_id is None:
        raise IntegrationError(f"lead {lead.ref} has no CRM contact yet; will retry after its CRM sync",
                               permanent=False)
    if row.provider_ref is None:
        look = look_first(session, row, "call", crm, settings.http_timeout_seconds, now)
        record = CallRecord(lead.ref, claim.bridged_at, claim.bridge_seconds, claim.crm_owner_id)
        with sending(session, [row], "call"):
            row.provider_ref = crm.log_call(lead.crm_contact_id, record, look_first=look)
        answered(session, [row], "call")
    if lead.crm_task_id is not None:
        session.commit()  # ends the read of a retry that logged the call before: nothing open across the call
        crm.complete_callback_task(lead.crm_task_id)


# After the recording, the voicemail note waits this long for Twilio's transcription (VOICE_TRANSCRIBE), then goes
# without it: Twilio transcribes a two-minute message within a minute or two.
TRANSCRIPTION_WAIT = timedelta(minutes=5)


def voicemail_note(lead: Lead, submission: Submission, call: PhoneCall) -> str:
    """The voicemail as a note on the contact: where it is at Twilio, how long, and the transcription if any."""
    lines = [f"Voicemail {lead.ref} (call {submission.entry_id}):", "",
             f"{call.recording_seconds or 0} s, kept at Twilio: {call.recording_url}",
             "Play it while logged in to Twilio (recordings are behind the account's credentials)."]
    if call.transcription:
        lines += ["", "Transcription (by Twilio, may contain mistakes):", call.transcription]
    elif call.transcription_status == "failed":
        lines += ["", "Twilio could not transcribe it: listen to the recording."]
    return "\n".join(lines)


def add_voicemail_note(session: Session, row: OutboxMessage, crm: CRM, settings: Settings, now: datetime) -> None:
    """Put a missed call's voicemail on the contact's timeline: after the lead's CRM sync created the contact and,
    with VOICE_TRANSCRIBE, once the transcription came or stopped being worth the wait. Retries until then."""
    call = session.scalar(select(PhoneCall).where(PhoneCall.submission_id == row.submission_id))
    if call is None or call.recording_url is None:
        return
    lead = session.get_one(Lead, row.lead_id, populate_existing=True)
    waiting_since = call.ended_at or call.updated_at
    if settings.voice_transcribe and call.transcription_status is None and now - waiting_since < TRANSCRIPTION_WAIT:
        raise IntegrationError(f"lead {lead.ref}: waiting for Twilio's transcription of the voicemail; will retry",
                               permanent=False)
    if lead.crm_contact_id is None:
        raise IntegrationError(f"lead {lead.ref} has no CRM contact yet; will retry after its CRM sync",
                               permanent=False)
    submission = session.get_one(Submission, row.submission_id)
    look = look_first(session, row, "note", crm, settings.http_timeout_seconds, now)
    with sending(session, [row], "note"):
        crm.add_note(lead.crm_contact_id, voicemail_note(lead, submission, call), waiting_since, look_first=look)
    answered(session, [row], "note")
