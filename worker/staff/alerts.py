"""Telling admissions staff that someone is waiting for a callback, without a word of PHI in the message."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple, cast

from sqlalchemy import ColumnElement, Table, bindparam, func, or_, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from integrations.errors import IntegrationError, Unauthorized
from integrations.messaging import SentMessage
from worker.leads.processing import SOURCE_FLOOD, SOURCE_FLOOD_WINDOW, call_time_of
from worker.staff.roster import StaffMember
from worker.staff.services import Services
from worker.staff.templates import AlertFacts
from worker.store.models import (
    EscalationTimer,
    Lead,
    LeadStatus,
    OutboxMessage,
    StaffAlert,
    Submission,
    SubmissionSource,
    TimerState,
)
from worker.store.unanswered import refused_before_writing, sending

log = logging.getLogger(__name__)

# A flood summary names at most this many lead references, to stay within one or two SMS segments.
FLOOD_SUMMARY_REFS = 6


def alert_facts(lead: Lead, services: Services, now: datetime) -> AlertFacts:
    """The only facts about a lead a staff text or call may use."""
    return AlertFacts(
        ref=lead.ref,
        repeat_count=lead.repeat_count,
        requested_at=lead.created_at,
        now=now,
        timezone=services.roster.timezone,
    )


def record_attempt(
    session: Session, lead: Lead, outbox_id: int, staff: StaffMember, channel: str, body: str, now: datetime
) -> StaffAlert:
    attempt = StaffAlert(
        lead_id=lead.id, outbox_id=outbox_id, staff_name=staff.name, staff_phone=staff.phone, channel=channel,
        body=body, status="sending" if channel == "sms" else "calling", created_at=now,
    )
    session.add(attempt)
    session.flush()
    return attempt


def _timer_upsert(insert: Callable[[Table], Any]) -> Any:
    # On the table, not the mapped class: an ORM-enabled insert costs as much again in the session's bulk machinery.
    timers = cast(Table, EscalationTimer.__table__)
    new_timer = insert(timers).values(
        lead_id=bindparam("lead_id"), outbox_id=bindparam("outbox_id"), due_at=bindparam("due_at"),
        waiting_sms_sid=bindparam("sms_sid"), created_at=bindparam("now"), updated_at=bindparam("now"),
    )
    return new_timer.on_conflict_do_update(
        index_elements=[timers.c.lead_id],
        set_={"due_at": new_timer.excluded.due_at, "updated_at": new_timer.excluded.updated_at},
        where=(timers.c.state == TimerState.PENDING) & (new_timer.excluded.due_at < timers.c.due_at),
    )


# Built once: building the statement costs more than running it does (every staff alert runs it).
_TIMER_UPSERT = {"postgresql": _timer_upsert(postgresql_insert), "sqlite": _timer_upsert(sqlite_insert)}


def start_escalation(
    session: Session, lead_id: int, outbox_id: int, *, due_at: datetime, now: datetime, sms_sid: str | None = None
) -> None:
    """Give the lead an escalation timer due at `due_at`, or bring its existing one forward to it: the first
    alert starts the ladder, and a repeat request never pushes a reminder back. One statement (a lead has one
    timer)."""
    start_escalations(session, [EscalationStart(lead_id, outbox_id, due_at, sms_sid)], now)


class EscalationStart(NamedTuple):
    lead_id: int
    outbox_id: int  # the alert that starts it
    due_at: datetime
    sms_sid: str | None  # the text it follows, if one went out


def start_escalations(session: Session, starts: Sequence[EscalationStart], now: datetime) -> None:
    """`start_escalation` for each of `starts`, in one statement."""
    if starts:
        session.execute(_TIMER_UPSERT[session.get_bind().dialect.name], [
            {"lead_id": each.lead_id, "outbox_id": each.outbox_id, "due_at": each.due_at, "sms_sid": each.sms_sid,
             "now": now} for each in starts])


def alert_staff(session: Session, row: OutboxMessage, services: Services, now: datetime) -> None:
    """Text the on-call staff member about the lead and start its escalation timer, recording the attempt
    whatever its outcome. A lead someone has claimed gets no more alerts."""
    lead = session.get_one(Lead, row.lead_id, populate_existing=True)
    submission = session.get_one(Submission, row.submission_id)
    if (submission.flag_reason or "").startswith(SOURCE_FLOOD):
        summarize_flood(session, row, lead, submission, services, now)
        return
    if lead.status != LeadStatus.NEW:
        log.info("lead %s is already claimed: staff alert %s not sent", lead.ref, row.id)
        return
    body = services.templates.render(_alert_template(lead, submission, services), alert_facts(lead, services, now))
    if not can_call_back(lead):
        # A call whose caller withheld their number: staff are told, and there is nothing to claim or call back.
        text_staff(session, lead, row, body, services, now)
        return
    try:
        sent = text_staff(session, lead, row, body, services, now)
    except IntegrationError as exc:
        if exc.permanent:
            # This text can never arrive (an opted-out or invalid staff phone): the reminder call goes out now.
            start_escalation(session, lead.id, row.id, due_at=now, now=now)
            session.commit()
        raise
    _remind_later(session, lead, submission, row, services, now, sent.sid)


def can_call_back(lead: Lead) -> bool:
    """A lead with a phone or email to reach: one whose only request was a call with the number withheld has none."""
    return lead.phone is not None or lead.email is not None


def reachable() -> ColumnElement[bool]:
    """`can_call_back` in SQL: leads someone can claim and call back."""
    return or_(Lead.phone.is_not(None), Lead.email.is_not(None))


def _alert_template(lead: Lead, submission: Submission, services: Services) -> str:
    return alert_template(services, submission.source, submission.is_repeat, reachable=can_call_back(lead))


def alert_template(services: Services, source: str, is_repeat: bool, *, reachable: bool) -> str:
    """The template of a staff text about a request of `source`; `reachable`: the lead can be called back."""
    templates = services.templates
    if source == SubmissionSource.CALL:
        return templates.missed_call_sms if reachable else templates.withheld_call_sms
    if source == SubmissionSource.SMS:
        return templates.inbound_text_sms
    return templates.repeat_sms if is_repeat else templates.alert_sms


def text_staff(
    session: Session, lead: Lead, row: OutboxMessage, body: str, services: Services, now: datetime
) -> SentMessage:
    """Text `body` about the outbox row to the on-call staff member, recording the attempt whatever its outcome.

    The attempt is committed before the text goes out. One still `sending` when the row is tried again lost its
    answer (a timeout, a crash, the database gone before the commit): Twilio is asked whether that text went out
    before another is sent, so staff are not texted twice for one row. Raises `IntegrationError` with the failed
    attempt committed."""
    unanswered = session.scalars(
        select(StaffAlert)
        .where(StaffAlert.outbox_id == row.id, StaffAlert.channel == "sms", StaffAlert.status == "sending")
        .order_by(StaffAlert.id.desc())
    ).first()
    if unanswered is not None and (found := look_up_unanswered(session, unanswered, services)) is not None:
        return found
    staff = services.roster.on_call_staff(now)[0]
    attempt = record_attempt(session, lead, row.id, staff, "sms", body, now)
    session.commit()
    try:
        sent = services.messenger.send_sms(staff.phone, body)
    except IntegrationError as exc:
        attempt.error = exc.message
        if refused_before_writing(exc):
            attempt.status = "failed"  # refused, so certainly not sent; otherwise it stays `sending` until known
        session.commit()
        raise
    attempt.status, attempt.provider_id = sent.status, sent.sid
    return sent


UNANSWERED = ("sending", "calling")


def look_up_unanswered(session: Session, attempt: StaffAlert, services: Services) -> SentMessage | None:
    """Ask Twilio whether a text or call still `sending`/`calling` (its answer lost) went out, and record what it
    says: the sid and status when it did; `failed` when Twilio has no such text or call, so it may be sent again.
    Raises `IntegrationError` (the attempt left as it was) when Twilio cannot be asked. Commits what the session
    holds first: no transaction stays open while Twilio is asked."""
    if attempt.channel == "sms":
        session.commit()
        found = services.messenger.find_sms(attempt.staff_phone, attempt.body)
    else:
        known = {sid for sid in session.scalars(select(StaffAlert.provider_id).where(
            StaffAlert.staff_phone == attempt.staff_phone, StaffAlert.channel == attempt.channel,
            StaffAlert.provider_id.is_not(None), StaffAlert.created_at >= attempt.created_at - timedelta(hours=1)))
            if sid}
        session.commit()
        found = services.messenger.find_call(attempt.staff_phone, attempt.created_at, known)
    if found is not None:
        attempt.status, attempt.provider_id, attempt.error = found.status, found.sid, None
        return found
    attempt.status = "failed"
    kind, again = ("text", "sent") if attempt.channel == "sms" else ("call", "placed")
    attempt.error = f"{attempt.error or 'no answer'}; Twilio has no such {kind}, so it is {again} again"
    return None


def _remind_later(session: Session, lead: Lead, submission: Submission, row: OutboxMessage, services: Services,
                  now: datetime, sms_sid: str) -> None:
    reminder_at = reminder_due(services, call_time_of(session, submission, services.settings), now)
    start_escalation(session, lead.id, row.id, due_at=reminder_at, now=now, sms_sid=sms_sid)


def reminder_due(services: Services, call_at: datetime | None, now: datetime) -> datetime:
    """When staff texted now are reminded by a call: a person who asked to be called in the evening is reminded
    about then, not in five minutes."""
    reminder_at = now + timedelta(minutes=services.settings.alert_reminder_minutes)
    return call_at if call_at is not None and call_at > reminder_at else reminder_at


def flood_summary_body(refs: list[str], limit: int) -> str:
    """The one text about a flood from one device: a count and lead references, never who or why."""
    shown = ", ".join(refs[:FLOOD_SUMMARY_REFS]) + (" and more" if len(refs) > FLOOD_SUMMARY_REFS else "")
    return (
        f"admitflow: {len(refs)} more callback request(s) from one device within an hour, past the limit of {limit}"
        f" texts: not texted one by one. Each has a CRM callback task: {shown}."
    )


def flood_refs(session: Session, submission: Submission, now: datetime) -> list[str]:
    """The leads of this device's submissions marked as a flood within the window, oldest first."""
    return list(session.scalars(
        select(Lead.ref)
        .join(Submission, Submission.lead_id == Lead.id)
        .where(
            Submission.device_index == submission.device_index,
            Submission.flag_reason.startswith(SOURCE_FLOOD),
            Submission.processed_at >= now - SOURCE_FLOOD_WINDOW,
        )
        .group_by(Lead.ref)
        .order_by(func.min(Submission.id))
    ))


def summarize_flood(
    session: Session, row: OutboxMessage, lead: Lead, submission: Submission, services: Services, now: datetime
) -> None:
    """Text the on-call staff member once about a flood of requests from one device. No reminder call follows:
    each lead has its CRM callback task, and a flood is more often a bot than people."""
    body = flood_summary_body(flood_refs(session, submission, now), services.settings.alert_source_max_per_hour)
    text_staff(session, lead, row, body, services, now)


def acknowledgement_body(center_number: str | None) -> str:
    """What the person reads on their own phone: nothing about why they wrote, whom they asked, or treatment."""
    via = f" from {_spoken_number(center_number)}" if center_number else ""
    return f"We received your request and will call you{via} soon. Reply STOP to stop texts."


def _spoken_number(e164: str) -> str:
    digits = e164.removeprefix("+1")
    return f"{digits[:3]}-{digits[3:6]}-{digits[6:]}" if len(digits) == 10 else e164


def acknowledge_person(session: Session, row: OutboxMessage, services: Services) -> None:
    """Text the person who asked (and consented to texts) that their request arrived, once; a person who texted the
    center's number gets SMS_AUTO_REPLY instead. A try whose answer was lost is looked up at Twilio (by the
    person's number and the text) before another is sent; the sid is kept."""
    lead = session.get_one(Lead, row.lead_id)
    texted_us = session.get_one(Submission, row.submission_id).source == SubmissionSource.SMS
    body = services.settings.sms_auto_reply if texted_us else acknowledgement_body(
        services.settings.twilio_from_number)
    if not (body and lead.phone and (texted_us or lead.consent_to_text)):
        return
    if row.unanswered == "ack":
        session.commit()  # ends the read: no transaction stays open while Twilio is asked
        if (found := services.messenger.find_sms(lead.phone, body)) is not None:
            row.provider_ref, row.unanswered, row.unanswered_at = found.sid, None, None
            session.commit()
            return
    try:
        with sending(session, [row], "ack"):
            sent = services.messenger.send_sms(lead.phone, body)
    except IntegrationError as exc:
        if not exc.permanent or isinstance(exc, Unauthorized):
            raise
        # The messenger words a refused recipient for staff phones ("the staff number ending in 42 ... fix
        # ROSTER_FILE"): here the recipient is the person, whose digits are PHI and who is not in the roster.
        raise IntegrationError(
            f"Twilio refused the acknowledgement text for lead {lead.ref} (HTTP {exc.status}); it is not sent, and "
            "staff call the person as usual. If every acknowledgement fails, check TWILIO_FROM_NUMBER",
            permanent=True, status=exc.status,
        ) from None
    row.provider_ref, row.unanswered, row.unanswered_at = sent.sid, None, None
    session.commit()
