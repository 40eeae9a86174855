"""Claiming a lead's callback, by an SMS reply or a key press on a reminder call. The first claim wins.

A claim is a conditional UPDATE (`status = 'claimed' WHERE status = 'new'`): when two staff members claim at the
same moment the database lets exactly one of them change the row, and the other is told who has it.
"""

from __future__ import annotations

import enum
import logging
import re
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from worker.staff.alerts import reachable
from worker.staff.roster import Roster, StaffMember
from worker.store.models import (
    Claim,
    EscalationTimer,
    Lead,
    LeadStatus,
    OutboxKind,
    OutboxMessage,
    StaffAlert,
    Submission,
    TimerState,
)
from worker.trust import audit

log = logging.getLogger(__name__)

# Twilio's default opt-out, opt-in and help keywords: https://help.twilio.com/articles/223134027
OPT_OUT_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"})
OPT_IN_WORDS = frozenset({"START", "UNSTOP"})
HELP_WORDS = frozenset({"HELP", "INFO"})
CLAIM_WORDS = frozenset({"1", "YES", "CLAIM"})
# "CLAIM R-7K2QX", "claim r7k2qx", or the reference alone. Crockford base32 reads O as 0 and I, L as 1.
_CLAIM_REF = re.compile(r"(?:(?:CLAIM|YES|1)\s+)?R\s*-?\s*([0-9A-Z]{5})")
_MISREAD = str.maketrans({"O": "0", "I": "1", "L": "1"})

HELP_TEXT = (
    "admitflow admissions alerts. Reply 1 or CLAIM to claim the latest callback request sent to you, or CLAIM "
    "and its reference (e.g. CLAIM R-7K2QX). Reply STOP to stop these texts."
)
USAGE_TEXT = "Reply 1 or CLAIM to claim the latest callback request sent to you, or CLAIM and its reference."


class ReplyKind(enum.StrEnum):
    CLAIM = "claim"
    HELP = "help"
    OPT_OUT = "opt_out"
    OPT_IN = "opt_in"
    OTHER = "other"


@dataclass(frozen=True)
class Reply:
    """What a staff member's text asks for; `ref` is set when they named a lead."""

    kind: ReplyKind
    ref: str | None = None


def parse_reply(body: str) -> Reply:
    """Read an SMS reply: `1`, `YES`, `CLAIM`, `CLAIM R-7K2QX`, HELP, or an opt-out/opt-in keyword."""
    text = " ".join(body.upper().split()).strip(" .!")
    if text in OPT_OUT_WORDS:
        return Reply(ReplyKind.OPT_OUT)
    if text in OPT_IN_WORDS:
        return Reply(ReplyKind.OPT_IN)
    if text in HELP_WORDS:
        return Reply(ReplyKind.HELP)
    if text in CLAIM_WORDS:
        return Reply(ReplyKind.CLAIM)
    named = _CLAIM_REF.fullmatch(text)
    if named:
        return Reply(ReplyKind.CLAIM, "R-" + named.group(1).translate(_MISREAD))
    return Reply(ReplyKind.OTHER)


class ClaimOutcome(enum.StrEnum):
    CLAIMED = "claimed"  # this claim won
    ALREADY_YOURS = "already_yours"
    TAKEN = "taken"  # someone else has it


@dataclass(frozen=True)
class ClaimResult:
    outcome: ClaimOutcome
    lead_ref: str
    claim_id: int
    holder_name: str
    outbox_ids: list[int] = field(default_factory=list)  # dispatch after commit: the CRM owner update


def claim_lead(session: Session, lead_id: int, staff: StaffMember, channel: str, now: datetime) -> ClaimResult:
    """Claim the lead for `staff`, or report who has it. Writes the speed-to-lead record, stops the lead's
    escalation and queues the CRM owner update in the caller's transaction; the caller commits, then dispatches."""
    won = session.execute(
        update(Lead).where(Lead.id == lead_id, Lead.status == LeadStatus.NEW).values(status=LeadStatus.CLAIMED)
    )
    lead = session.get_one(Lead, lead_id, populate_existing=True)
    if won.rowcount != 1:  # type: ignore[attr-defined]
        holder = session.scalar(select(Claim).where(Claim.lead_id == lead_id))
        if holder is None:  # claimed outside admitflow's claim flow: nobody to name
            return ClaimResult(ClaimOutcome.TAKEN, lead.ref, 0, "another staff member")
        outcome = ClaimOutcome.ALREADY_YOURS if holder.staff_id == staff.id else ClaimOutcome.TAKEN
        return ClaimResult(outcome, lead.ref, holder.id, holder.staff_name)
    first_alert = session.scalar(select(func.min(StaffAlert.created_at)).where(StaffAlert.lead_id == lead_id))
    claim = Claim(
        lead_id=lead_id, staff_id=staff.id, staff_name=staff.name, staff_phone=staff.phone,
        crm_owner_id=staff.crm_owner_id, channel=channel, submitted_at=lead.created_at,
        first_alert_at=first_alert, claimed_at=now,
    )
    session.add(claim)
    session.execute(
        update(EscalationTimer).where(EscalationTimer.lead_id == lead_id).values(state=TimerState.DONE, updated_at=now)
    )
    latest_submission = session.scalar(select(func.max(Submission.id)).where(Submission.lead_id == lead_id))
    outbox_ids: list[int] = []
    if latest_submission is not None and staff.crm_owner_id:
        row = OutboxMessage(kind=OutboxKind.CRM_ASSIGN, lead_id=lead_id, submission_id=latest_submission)
        session.add(row)
        session.flush()
        outbox_ids.append(row.id)
    session.flush()
    audit.record(session, audit.AuditAction.CLAIM, actor_kind=audit.ActorKind.STAFF, actor=staff.id,
                 lead_ref=lead.ref, detail=f"by {channel}")
    log.info("lead %s claimed by staff %s by %s", lead.ref, staff.id, channel)
    return ClaimResult(ClaimOutcome.CLAIMED, lead.ref, claim.id, staff.name, outbox_ids)


def lead_to_claim(session: Session, staff: StaffMember, ref: str | None) -> Lead | None:
    """The lead a reply means: the one named, else the latest unclaimed one alerted to this staff member, else
    the latest one alerted to them at all (so they hear who has it). A call with the number withheld is never
    meant: there is nothing to claim."""
    if ref is not None:
        return session.scalar(select(Lead).where(Lead.ref == ref))
    alerted = (
        select(Lead)
        .join(StaffAlert, StaffAlert.lead_id == Lead.id)
        .where(StaffAlert.staff_phone == staff.phone, reachable())
        .order_by(StaffAlert.created_at.desc(), StaffAlert.id.desc())
        .limit(1)
    )
    return session.scalar(alerted.where(Lead.status == LeadStatus.NEW)) or session.scalar(alerted)


@dataclass(frozen=True)
class SmsAnswer:
    """The text to send back (None: send nothing) and outbox rows to dispatch after the commit."""

    text: str | None
    outbox_ids: list[int] = field(default_factory=list)


def answer_sms(session: Session, roster: Roster, sender: str, body: str, now: datetime) -> SmsAnswer:
    """Act on an inbound SMS to the center's number. Only roster phones can claim; nothing a sender wrote is
    logged, and a sender who is not on the roster (perhaps a person seeking help) is not logged at all."""
    reply = parse_reply(body)
    staff = roster.staff_with_phone(sender)
    if reply.kind == ReplyKind.HELP:
        return SmsAnswer(HELP_TEXT)
    if staff is None:
        log.info("ignored an inbound SMS from a number that is not on the roster")
        return SmsAnswer(None)
    if reply.kind == ReplyKind.OPT_OUT:
        # Twilio has already answered and blocks texts to this phone until it sends START.
        log.warning("staff %s opted out of SMS from the center's number: they get calls only until they text "
                    "START", staff.id)
        return SmsAnswer(None)
    if reply.kind == ReplyKind.OPT_IN:
        log.info("staff %s opted back in to SMS from the center's number", staff.id)
        return SmsAnswer(None)
    if reply.kind == ReplyKind.OTHER:
        return SmsAnswer(USAGE_TEXT)
    lead = lead_to_claim(session, staff, reply.ref)
    if lead is None:
        if reply.ref is not None:
            return SmsAnswer(f"No callback request has reference {reply.ref}. Check the reference in the alert.")
        return SmsAnswer("No callback request has been sent to you. To claim one, reply CLAIM and its reference.")
    result = claim_lead(session, lead.id, staff, "sms", now)
    return SmsAnswer(claim_reply_text(result), result.outbox_ids)


def claim_reply_text(result: ClaimResult) -> str:
    if result.outcome == ClaimOutcome.CLAIMED:
        return (f"Claimed {result.lead_ref} for you; no one else will be alerted. Call back now from CRM task "
                f'"Callback {result.lead_ref}".')
    if result.outcome == ClaimOutcome.ALREADY_YOURS:
        return f"{result.lead_ref} is already yours. Call back from CRM task \"Callback {result.lead_ref}\"."
    return f"{result.lead_ref} is already claimed by {result.holder_name}."
