"""A text to the center's number: a staff member's reply (claims, worker/staff/claims.py), or a person reaching out.

A text from a number that is not on the roster is stored through the intake door (entry id: the MessageSid, so a
webhook Twilio repeats is stored once) and processing makes a lead of it (source `sms`). STOP, START and HELP are
keywords, not requests: Twilio enforces opt-out itself, and HELP gets a short PHI-free answer. Nothing the sender
wrote, nor their number, is logged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.orm import Session

from worker.intake.entries import RejectedEntry, store_entry
from worker.intake.phone_entries import caller_number, line_site, text_entry
from worker.staff.claims import ReplyKind, answer_sms, parse_reply
from worker.staff.services import Services
from worker.store.models import SubmissionSource

log = logging.getLogger(__name__)

DEFAULT_PUBLIC_HELP = (
    "You have reached an admissions line. We will call you back. In a crisis, call or text 988; in an emergency, "
    "call 911. Reply STOP to stop texts."
)


@dataclass(frozen=True)
class TextAnswer:
    """The text to send back (None: nothing), and what to hand on after the commit."""

    reply: str | None
    submission_ids: list[int] = field(default_factory=list)
    outbox_ids: list[int] = field(default_factory=list)


def answer_text(
    session: Session, message_sid: str, sender: str, body: str, media: int, services: Services, now: datetime
) -> TextAnswer:
    """Act on a text to the center's number: staff replies as before; anyone else's text becomes a lead."""
    if services.roster.staff_with_phone(sender) is not None or not services.settings.sms_inbound_leads:
        answer = answer_sms(session, services.roster, sender, body, now)
        return TextAnswer(answer.text, outbox_ids=answer.outbox_ids)
    keyword = parse_reply(body).kind
    if keyword == ReplyKind.HELP:
        return TextAnswer(services.settings.sms_help_reply or DEFAULT_PUBLIC_HELP)
    if keyword in (ReplyKind.OPT_OUT, ReplyKind.OPT_IN):
        return TextAnswer(None)  # Twilio has answered and keeps the opt-out itself
    number = caller_number(sender, services.settings.phone_default_region)
    if number is None:
        log.info("ignored a text from a sender that is not a phone number (a short code or an alphanumeric id)")
        return TextAnswer(None)
    entry = text_entry(message_sid, now, number, body, media)
    try:
        stored = store_entry(session, site=line_site(services.settings), entry=entry, source=SubmissionSource.SMS)
    except RejectedEntry as exc:
        log.warning("a text to the center's number was not stored: %s (Twilio always sends a MessageSid)", exc)
        return TextAnswer(None)
    if stored.created:
        log.info("a text to the center's number: stored as submission %s", stored.submission_id)
    return TextAnswer(None, [stored.submission_id] if stored.created else [])
