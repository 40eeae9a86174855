"""Calls and texts to the center's number as entries of the intake door: one submission per Twilio CallSid or
MessageSid, stored once like a form entry, and read back as what the person gave us: their number, their words.

There is no Gravity Forms form behind these entries; the entry itself says what it is (`form_id` "call" or "sms").
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from config.settings import Settings
from config.sites import load_sites
from integrations.gravityforms.mapping import ApplicantFields
from worker.intake.normalize import MAX_MESSAGE_CHARS, clean_text, normalize_phone

CALL_FORM = "call"
TEXT_FORM = "sms"
# https://www.twilio.com/docs/glossary/what-is-a-sid: two letters for the resource, 32 hex digits.
_SID = re.compile(r"(CA|SM|MM)[0-9a-f]{32}")
_SID_PREFIXES = {CALL_FORM: ("CA",), TEXT_FORM: ("SM", "MM")}
# What Twilio and carriers put in `From` when the caller withheld their number: the keypad spellings of
# ANONYMOUS, RESTRICTED and UNAVAILABLE, and the words themselves.
WITHHELD_CALLER_IDS = frozenset({
    "+266696687", "266696687", "+7378742833", "7378742833", "+86282452253", "86282452253",
    "anonymous", "restricted", "unavailable", "unknown", "private", "blocked", "withheld",
})


def is_call_sid(value: str) -> bool:
    """A Twilio CallSid: what a call's entry is keyed by."""
    return bool(_SID.fullmatch(value)) and value.startswith("CA")


def line_site(settings: Settings) -> str:
    """The site calls and texts to the center's number belong to: the first configured one."""
    return load_sites(settings)[0].name


def caller_number(raw: str | None, region: str) -> str | None:
    """The caller's E.164 number, or None when they withheld it or it is not a diallable number."""
    text = (raw or "").strip()
    if not text or text.lower() in WITHHELD_CALLER_IDS:
        return None
    return normalize_phone(text, region)


class PhoneEntry(BaseModel):
    """A call or text as stored. `caller` and `body` are PHI; the rest are facts of the call flow."""

    model_config = ConfigDict(extra="ignore")

    id: str
    form_id: Literal["call", "sms"]
    status: str = "active"
    date_created: datetime | None = None
    caller: str | None = None  # E.164, None: withheld
    body: str | None = None  # a text's words
    media: int = 0  # pictures or files sent with a text (they stay at Twilio)
    outcome: str | None = None  # a call's CallOutcome
    staff_rung: int = 0
    ring_seconds: int = 0
    voicemail: bool = False  # the caller was offered voicemail
    purged: bool = False  # retention replaced the entry by a stub

    @field_validator("id", mode="before")
    @classmethod
    def _sid(cls, value: Any) -> str:
        if not isinstance(value, str) or not _SID.fullmatch(value):
            raise ValueError("must be a Twilio CallSid or MessageSid")
        return value

    @model_validator(mode="after")
    def _sid_matches_kind(self) -> PhoneEntry:
        if not self.id.startswith(_SID_PREFIXES[self.form_id]):
            raise ValueError(f"a {self.form_id} entry's id must be a {' or '.join(_SID_PREFIXES[self.form_id])} SID")
        return self


def call_entry(
    call_sid: str, started_at: datetime, caller: str | None, outcome: str, *, staff_rung: int, ring_seconds: int,
    voicemail: bool,
) -> dict[str, Any]:
    """The entry a call nobody took is stored as."""
    return {"id": call_sid, "form_id": CALL_FORM, "status": "active", "date_created": started_at.isoformat(),
            "caller": caller, "outcome": outcome, "staff_rung": staff_rung, "ring_seconds": ring_seconds,
            "voicemail": voicemail}


def text_entry(message_sid: str, received_at: datetime, sender: str, body: str, media: int) -> dict[str, Any]:
    """The entry a text from the public is stored as."""
    return {"id": message_sid, "form_id": TEXT_FORM, "status": "active", "date_created": received_at.isoformat(),
            "caller": sender, "body": body[:MAX_MESSAGE_CHARS * 2], "media": media}


_CALL_OUTCOMES = {
    "missed": "Called the admissions line; {staff} staff rung for {seconds} s, and nobody took the call.",
    "abandoned": "Called the admissions line and hung up after {seconds} s, while {staff} staff were being rung.",
    "after_hours": "Called the admissions line after hours, with nobody on shift.",
    "not_rung": "Called the admissions line, which takes calls straight to voicemail.",
}


def call_summary(entry: PhoneEntry) -> str:
    """What happened on the call, for the CRM note: no words of the caller's, they are in the voicemail."""
    template = _CALL_OUTCOMES.get(entry.outcome or "", "Called the admissions line.")
    lines = [template.format(staff=entry.staff_rung, seconds=entry.ring_seconds)]
    if entry.caller is None:
        lines.append("The caller withheld their number: there is no number to call back.")
    if entry.voicemail:
        lines.append("They were offered voicemail; a voicemail they left is in its own note.")
    return " ".join(lines)


def phone_fields(entry: PhoneEntry) -> ApplicantFields:
    """What a call or text tells us about the person: their number, and for a text its words."""
    if entry.form_id == CALL_FORM:
        return ApplicantFields(phone=entry.caller, message=call_summary(entry))
    words = clean_text(entry.body, limit=MAX_MESSAGE_CHARS)
    attached = f"({entry.media} picture(s) or file(s) attached, kept at Twilio)" if entry.media else None
    message = "\n".join(part for part in (words, attached) if part) or None
    return ApplicantFields(phone=entry.caller, message=message)
