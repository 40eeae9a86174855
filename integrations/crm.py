"""What the worker needs from a CRM, and a log-only CRM for running without credentials."""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, cast

from integrations.errors import IntegrationError, RateLimited

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ContactCard:
    """The person as the CRM should show them. Holds PHI: never log it."""

    lead_ref: str
    first_name: str | None
    last_name: str | None
    email: str | None
    phone: str | None  # E.164
    repeat_count: int
    source: str  # "<site>/form <id>"
    consent_to_text: bool | None
    consent: bool | None = None  # the form's "OK to contact me" box
    # Where the request came from: utm_source/medium/campaign/term/content, gclid, fbclid, msclkid, referrer,
    # landing_page and form_page (the page the form was on), those the entry had.
    attribution: Mapping[str, str] = field(default_factory=dict)
    # Another lead, another person, reached this inbox first (a shared family address): HubSpot, which keeps one
    # contact per email, leaves the address off this person's contact; Salesforce keeps it on both Leads.
    email_shared_with: str | None = None
    # False when the record the CRM would find by this card's email (else phone) may be another lead's, another
    # person's (a shared inbox; a shared phone and no email): the CRM must not attach this person to it, or the
    # record's name and phone would flip between the two on every sync.
    match_existing: bool = True


@dataclass(frozen=True)
class NoteRoom:
    """How long a note the CRM keeps: `measure(text)` is the text's length as the CRM stores it, at most `limit`."""

    limit: int
    measure: Callable[[str], int] = len


# A Salesforce Task's Description holds 32,000 characters: what a CRM that does not say holds is taken to hold.
DEFAULT_NOTE_ROOM = NoteRoom(32_000)


def note_room(crm: object) -> NoteRoom:
    """The CRM's note room, or the default for a CRM that does not say."""
    room = getattr(crm, "note_room", None)
    return room if isinstance(room, NoteRoom) else DEFAULT_NOTE_ROOM


@dataclass(frozen=True)
class CallbackTaskSpec:
    """The callback task admissions works from; `subject` carries the lead reference and is unique per lead."""

    lead_ref: str
    subject: str
    body: str
    owner_id: str | None
    due_at: datetime


@dataclass(frozen=True)
class CallRecord:
    """A bridged call that reached the person: logged on the contact, and it completes the callback task."""

    lead_ref: str
    started_at: datetime
    duration_seconds: int | None
    owner_id: str | None  # the CRM owner of the staff member who made the call


@dataclass(frozen=True)
class NoteSpec:
    """One request's note for a batch: `key` names it in the batch's answer; `marker` is text that only this note's
    body contains (the request's header line), for finding it again after an answer that was lost."""

    key: str
    contact_id: str
    text: str
    at: datetime
    marker: str


@dataclass
class BatchResult:
    """What a batch call did per item: the CRM id of each item that went through, the error of each that did not.
    An item in neither was not attempted (the call stopped before it) and is retried like a failure. `absent` names
    the items looked for first (`look_first`) and not there: no earlier attempt made them. `found` names existing
    records a look matched to items that then failed: kept, the next attempt writes to them without looking again."""

    ids: dict[str, str] = field(default_factory=dict)
    errors: dict[str, IntegrationError] = field(default_factory=dict)
    absent: set[str] = field(default_factory=set)
    found: dict[str, str] = field(default_factory=dict)


class LookupFailed(IntegrationError):
    """The look for an earlier attempt's record did not answer, so nothing was created: try again later."""

    def __init__(self, cause: IntegrationError) -> None:
        super().__init__(f"looking for an earlier attempt failed: {cause.message}", permanent=False,
                         status=cause.status)


def look_failed(cause: IntegrationError) -> IntegrationError:
    """The error of items whose look failed: a 429 stays a rate limit (its Retry-After is obeyed and spends no
    retry budget); anything else is a `LookupFailed`."""
    return cause if isinstance(cause, RateLimited) else LookupFailed(cause)


@dataclass(frozen=True)
class MergeOutcome:
    """A merge of two records for one person: the record they now have, and what a person must still do in the
    CRM when its API cannot finish the merge (never PHI: CRM ids only)."""

    contact_id: str
    left_for_a_person: str | None = None


class CRM(Protocol):
    """A CRM that holds contacts, notes and callback tasks.

    Every method may raise `integrations.errors.IntegrationError`. The worker records each returned id before
    calling the next method, so a retry resumes where the last attempt stopped; a create whose answer was lost is
    retried with `look_first`, after `lookup_lag_seconds` (docs/idempotency.md).
    """

    name: str

    def lookup_lag_seconds(self, step: str) -> float:
        """How long after a create of `step` ("contact", "note", "task", "call") a lookup is sure to see it: a
        search index's lag; 0 where the write is keyed by our own id or the lookup reads the database."""

    def upsert_contact(self, card: ContactCard, contact_id: str | None) -> str:
        """Create the contact, or update it when `contact_id` is known or an existing contact has the same
        email (else phone). Returns the contact id."""

    def add_note(self, contact_id: str, text: str, at: datetime, *, look_first: bool = False) -> str:
        """Attach a note (the person's message) to the contact. Returns the note id. The text's first line names
        the request: with `look_first` (an earlier attempt may have added the note and lost the answer), a note on
        the contact that begins with it is returned instead of adding another."""

    def ensure_callback_task(self, contact_id: str, task: CallbackTaskSpec) -> str:
        """Return the id of the contact's callback task with `task.subject`, creating it if there is none, so a
        repeated call after a crash does not create a second task."""

    def assign_callback_task(self, task_id: str, owner_id: str) -> None:
        """Make `owner_id` the owner of the callback task (the staff member who claimed the lead). Idempotent."""

    def log_call(self, contact_id: str, call: CallRecord, *, look_first: bool = False) -> str:
        """Log the connected call on the contact; returns the call's id. With `look_first`, the contact's call
        for `call.lead_ref` is returned if there is one."""

    def complete_callback_task(self, task_id: str) -> None:
        """Mark the callback task done (the bridged call reached the person). Idempotent."""

    def merge_contacts(self, contact_id: str, duplicate_id: str, duplicate_task_id: str | None) -> MergeOutcome:
        """Make `duplicate_id` (a second record for the person of `contact_id`) part of `contact_id`'s: its notes
        and tasks go to it, and its callback task `duplicate_task_id` is removed (the contact has its own). Safe
        to repeat after an answer was lost."""

    def remove_note(self, note_id: str) -> None:
        """Delete a note: the request it holds was split off to another person's record. A note already gone is
        not an error."""


class BatchCRM(CRM, Protocol):
    """A CRM that also takes many leads per call. Each method raises `IntegrationError` when the whole call failed;
    per-item failures come back in `BatchResult.errors`. The items keyed in `look_first` may have been created by
    an earlier attempt whose answer never came: they are looked up before anything is created."""

    batch_size: int

    def upsert_contacts(self, contacts: Sequence[tuple[ContactCard, str | None]]) -> BatchResult:
        """Like `upsert_contact` for each (card, known contact id); results keyed by lead reference."""

    def add_notes(self, notes: Sequence[NoteSpec], *, look_first: Collection[str] = ()) -> BatchResult:
        """Like `add_note` for each; results keyed by `NoteSpec.key`."""

    def ensure_callback_tasks(
        self, tasks: Sequence[tuple[str, CallbackTaskSpec]], *, look_first: Collection[str] = ()
    ) -> BatchResult:
        """Like `ensure_callback_task` for each (contact id, task); results keyed by the task's lead reference."""


def batching(crm: CRM) -> BatchCRM | None:
    """The CRM as a `BatchCRM` when it takes more than one lead per call, else None."""
    return cast(BatchCRM, crm) if getattr(crm, "batch_size", 0) > 1 else None


class LogOnlyCRM:
    """Stands in for a CRM when none is configured: logs what it would do, by lead reference only."""

    name = "log-only CRM"

    def lookup_lag_seconds(self, step: str) -> float:
        return 0.0

    def upsert_contact(self, card: ContactCard, contact_id: str | None) -> str:
        log.info("LOG-ONLY CRM (no HUBSPOT_TOKEN set): would upsert the contact for lead %s", card.lead_ref)
        return contact_id or f"log-contact-{card.lead_ref}"

    def add_note(self, contact_id: str, text: str, at: datetime, *, look_first: bool = False) -> str:
        log.info("LOG-ONLY CRM: would add a %d-character note to %s", len(text), contact_id)
        return f"log-note-{contact_id}-{int(at.timestamp())}"

    def ensure_callback_task(self, contact_id: str, task: CallbackTaskSpec) -> str:
        log.info("LOG-ONLY CRM: would create task %r owned by %s", task.subject, task.owner_id or "nobody")
        return f"log-task-{task.lead_ref}"

    def assign_callback_task(self, task_id: str, owner_id: str) -> None:
        log.info("LOG-ONLY CRM: would give task %s to owner %s", task_id, owner_id)

    def log_call(self, contact_id: str, call: CallRecord, *, look_first: bool = False) -> str:
        log.info("LOG-ONLY CRM: would log a %ss call for lead %s", call.duration_seconds, call.lead_ref)
        return f"log-call-{call.lead_ref}"

    def complete_callback_task(self, task_id: str) -> None:
        log.info("LOG-ONLY CRM: would complete task %s", task_id)
    def merge_contacts(self, contact_id: str, duplicate_id: str, duplicate_task_id: str | None) -> MergeOutcome:
        log.info("LOG-ONLY CRM: would merge %s into %s and remove task %s", duplicate_id, contact_id,
                 duplicate_task_id)
        return MergeOutcome(contact_id)

    def remove_note(self, note_id: str) -> None:
        log.info("LOG-ONLY CRM: would remove note %s", note_id)


class LogOnlyBatchCRM(LogOnlyCRM):
    """The log-only CRM the worker runs with: it takes any number of leads at once, so the worker hands it leads in
    batches, as it does HubSpot, instead of a task per lead."""

    batch_size = 100

    def upsert_contacts(self, contacts: Sequence[tuple[ContactCard, str | None]]) -> BatchResult:
        return BatchResult(ids={card.lead_ref: self.upsert_contact(card, known) for card, known in contacts})

    def add_notes(self, notes: Sequence[NoteSpec], *, look_first: Collection[str] = ()) -> BatchResult:
        return BatchResult(ids={note.key: self.add_note(note.contact_id, note.text, note.at) for note in notes})

    def ensure_callback_tasks(
        self, tasks: Sequence[tuple[str, CallbackTaskSpec]], *, look_first: Collection[str] = ()
    ) -> BatchResult:
        return BatchResult(ids={task.lead_ref: self.ensure_callback_task(contact, task) for contact, task in tasks})
