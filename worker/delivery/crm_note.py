"""What one request tells the CRM: the contact as the person typed it, and a note with every answer.

The note is for the contact's timeline in the CRM, which holds PHI under the center's BAA; nothing here is logged.
A note longer than the CRM keeps says where it stops and where the whole request is, never cut without a word.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from config.settings import Settings
from integrations.crm import ContactCard, NoteRoom
from integrations.gravityforms.answers import Answer, answers
from integrations.gravityforms.mapping import ApplicantFields
from worker.intake.entries import PHONE_SOURCES
from worker.intake.normalize import MAX_MESSAGE_CHARS, clean_text, looks_like_a_phone, normalize_email, normalize_phone
from worker.intake.phone_entries import PhoneEntry, phone_fields
from worker.leads.processing import FormReader, message_text
from worker.store.models import Lead, Submission, SubmissionSource

ATTRIBUTION_LABELS = {
    "utm_source": "UTM source", "utm_medium": "UTM medium", "utm_campaign": "UTM campaign", "utm_term": "UTM term",
    "utm_content": "UTM content", "gclid": "Google Ads click id (gclid)", "fbclid": "Facebook click id (fbclid)",
    "msclkid": "Microsoft Ads click id (msclkid)", "referrer": "Referrer", "landing_page": "Landing page",
    "form_page": "Form page",
}


@dataclass(frozen=True)
class RequestDetails:
    """One submission read through its form: the person's fields, every other answer, where they came from."""

    fields: ApplicantFields
    answers: list[Answer] = field(default_factory=list)
    attribution: dict[str, str] = field(default_factory=dict)
    message_label: str = "Message"
    phone_unparsed: bool = False


def request_details(session: Session, submission: Submission, settings: Settings,
                    forms: FormReader | None = None) -> RequestDetails | None:
    """The submission read through its registered form, or None when the form is not registered. A call or a text
    to the center's number has no form: its entry is all there is."""
    if submission.source in PHONE_SOURCES:
        return RequestDetails(fields=phone_fields(PhoneEntry.model_validate(submission.payload)))
    known = (forms or FormReader(session, settings)).form(submission.site, submission.form_id)
    if known is None:
        return None
    form, mapping = known
    entry = submission.payload
    fields = mapping.read(entry)
    message_source = next((source for source in mapping.roles.get("message", ())
                           if source.field.id in fields.used), None)
    return RequestDetails(
        fields=fields,
        answers=list(answers(form.fields, entry, fields.used | mapping.attribution_fields())),
        attribution=mapping.attribution(entry),
        message_label=message_source.field.title if message_source else "Message",
        phone_unparsed=normalize_phone(fields.phone, settings.phone_default_region) is None
        and looks_like_a_phone(fields.phone),
    )


def typed_email(lead: Lead, fields: ApplicantFields | None) -> str | None:
    """The address as the person typed it (trimmed), for the CRM's own matching; the lowered, Gmail-folded form
    stays in admitflow for dedup. A Gmail address this request did not type is left out rather than folded."""
    typed = clean_text(fields.email, limit=254) if fields else None
    if typed and lead.email and normalize_email(typed) == lead.email:
        return typed
    if lead.email and lead.email.rsplit("@", 1)[-1] != "gmail.com":
        return lead.email
    return None


def contact_card(lead: Lead, submission: Submission, details: RequestDetails | None = None,
                 shared: tuple[str | None, bool] | None = None) -> ContactCard:
    """The contact as the CRM gets it. `shared`: the lead that reached this lead's inbox first, if another did, and
    whether a record found by this lead's email (else phone) could be another person's (crm_sync.shared_identity)."""
    email_holder, sharing = shared or (None, False)
    return ContactCard(
        lead_ref=lead.ref,
        first_name=lead.first_name,
        last_name=lead.last_name,
        email=typed_email(lead, details.fields if details else None),
        phone=lead.phone,
        repeat_count=lead.repeat_count,
        source=f"{submission.site}/{REQUEST_KINDS.get(submission.source, f'form {submission.form_id}')}",
        consent_to_text=lead.consent_to_text,
        consent=lead.consent,
        attribution=details.attribution if details else {},
        email_shared_with=email_holder,
        match_existing=not sharing,
    )


# How a request that did not come from a form is named on the CRM contact, in its notes and in its callback task.
REQUEST_KINDS: dict[str, str] = {SubmissionSource.CALL: "missed call", SubmissionSource.SMS: "text message"}
REQUESTED_THROUGH: dict[str, str] = {SubmissionSource.CALL: "a call to the admissions line",
                                     SubmissionSource.SMS: "a text to the admissions line"}


def note_header(lead: Lead, submission: Submission) -> str:
    """The note's first line: names the request, so the note can be found again on its contact."""
    if submission.source == SubmissionSource.CALL:
        return f"Missed call {lead.ref} (call {submission.entry_id}):"
    if submission.source == SubmissionSource.SMS:
        return f"Text message {lead.ref} (message {submission.entry_id}):"
    return f"Website request {lead.ref} (form {submission.form_id}, entry {submission.entry_id}):"


def note_text(lead: Lead, submission: Submission, details: RequestDetails, room: NoteRoom) -> str | None:
    """What the person told us in this request, for the contact's timeline; None when they said nothing.

    The short parts come first and the message last, so a message longer than the CRM keeps is the part cut, with
    a line that says so and where the whole request is."""
    fields = details.fields
    top = []
    if fields.best_time:
        top.append(f"Best time to call: {clean_text(fields.best_time)}")
    if fields.for_whom:
        top.append(f"Asking for: {clean_text(fields.for_whom)}")
    if details.phone_unparsed:
        top.append(f"Phone as typed (not a number we could read: check it before calling): {clean_text(fields.phone)}")
    if fields.email and normalize_email(fields.email) is None:
        top.append(f"Email as typed (not a valid address): {clean_text(fields.email, limit=254)}")
    answered = ["Answers:", *(f"{clean_text(answer.label)}: {_value(answer.value)}" for answer in details.answers)]
    source = ["Where they came from:", *(f"{ATTRIBUTION_LABELS.get(key, key)}: {clean_text(value, limit=2000)}"
                                         for key, value in details.attribution.items())]
    message = message_text(fields)
    said = [block for block in (top, answered[1:], [message] if message else []) if block]
    if not said:
        return None  # where they came from is on the contact; a note needs something the person said
    blocks = [top, answered if details.answers else [], source if details.attribution else [],
              [f"{clean_text(details.message_label)}:", message] if message else []]
    text = "\n\n".join([note_header(lead, submission), *("\n".join(block) for block in blocks if block)])
    return _fit(text, submission, room)


def _value(value: str) -> str:
    return clean_text(value, limit=MAX_MESSAGE_CHARS) or ""


def _fit(text: str, submission: Submission, room: NoteRoom) -> str:
    """The text, or as much of it as the CRM keeps followed by a line saying where the rest is."""
    if room.measure(text) <= room.limit:
        return text

    def trailer(kept: int) -> str:
        return (f"\n\n[This note continues: it holds the first {kept:,} of the request's {len(text):,} characters, "
                "as many as the CRM keeps in one note. The whole request is in admitflow: "
                f"admitflow submissions show {submission.id} --reveal]")

    low, high = 0, len(text)
    while low < high:
        middle = (low + high + 1) // 2
        if room.measure(text[:middle] + trailer(middle)) <= room.limit:
            low = middle
        else:
            high = middle - 1
    return text[:low].rstrip() + trailer(low)
