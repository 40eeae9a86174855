"""Reminding and escalating until someone claims a lead, driven by timer rows with a due time.

The first alert's text starts a timer (worker/staff/alerts.py). When it is due and the lead is still unclaimed:
step 0 calls the on-call person (a voice reminder that can claim and connect with one key); step n texts and
calls rung n of the ladder (second, then supervisor); the top of the ladder is reminded again every
ALERT_TOP_REPEAT_MINUTES. Twilio's status callbacks make a timer due at once when its text or call failed.
The same rows time call-back attempts after a bridged call that did not reach the person (worker/staff/callbacks.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from integrations.errors import IntegrationError
from integrations.messaging import SentMessage
from worker.staff.alerts import UNANSWERED, alert_facts, look_up_unanswered, record_attempt
from worker.staff.roster import StaffMember
from worker.staff.services import Services
from worker.staff.twilio_urls import REMINDER_PATH, hook_url
from worker.store.models import Claim, EscalationTimer, Lead, LeadStatus, StaffAlert, TimerPurpose, TimerState
from worker.store.unanswered import refused_before_writing

log = logging.getLogger(__name__)

# A step whose worker died is taken again after this long.
TIMER_LEASE = timedelta(minutes=2)
# Twilio itself failing (5xx, timeouts, rate limits): try the same step again this soon.
RETRY_SAME_STEP = timedelta(minutes=1)
# A claimer who does not take this many call-back reminder calls in a row is left to the CRM task.
MAX_CALLBACK_REMINDERS = 3

# https://www.twilio.com/docs/messaging/guides/track-outbound-message-status
MESSAGE_FAILED = frozenset({"undelivered", "failed"})
_MESSAGE_ORDER = {"accepted": 1, "scheduled": 1, "queued": 1, "sending": 2, "sent": 3, "delivered": 4,
                  "undelivered": 4, "failed": 4, "read": 5}
# https://www.twilio.com/docs/voice/api/call-resource#call-status-values, and ours for a call a machine answered.
REACHED_MACHINE = "machine"
CALL_FAILED = frozenset({"busy", "no-answer", "failed", "canceled", REACHED_MACHINE})
_CALL_ORDER = {"queued": 1, "initiated": 1, "ringing": 2, "in-progress": 3, "completed": 4, "busy": 4,
               "no-answer": 4, "failed": 4, "canceled": 4, REACHED_MACHINE: 5}
# Answering machine detection's verdicts for a voicemail or fax: nobody heard the reminder.
# https://www.twilio.com/docs/voice/answering-machine-detection (AnsweredBy)
MACHINE_ANSWERS = frozenset({"machine_start", "machine_end_beep", "machine_end_silence", "machine_end_other", "fax"})


def lease_due_timers(session: Session, now: datetime, limit: int = 50) -> list[int]:
    """Take the timers that are due and not being worked on, in a short transaction of their own. On PostgreSQL
    the rows are read with FOR UPDATE SKIP LOCKED, so concurrent runs take different rows instead of waiting;
    SQLite has a single writer and ignores the clause. Commits."""
    timers = session.scalars(
        select(EscalationTimer)
        .where(
            EscalationTimer.state == TimerState.PENDING,
            EscalationTimer.due_at <= now,
            or_(EscalationTimer.leased_until.is_(None), EscalationTimer.leased_until < now),
        )
        .order_by(EscalationTimer.due_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    for timer in timers:
        timer.leased_until = now + TIMER_LEASE
    ids = [timer.id for timer in timers]
    session.commit()
    return ids


@dataclass(frozen=True)
class Contact:
    """One text or call of a step: its provider id, or the error that stopped it."""

    sid: str | None
    error: IntegrationError | None = None


def escalate(session: Session, timer_id: int, services: Services, now: datetime) -> None:
    """Take the next step for a leased timer, unless its lead has been claimed meanwhile. Commits."""
    timer = session.get(EscalationTimer, timer_id, populate_existing=True)
    if timer is None or timer.state != TimerState.PENDING or timer.leased_until is None:
        return
    lead = session.get_one(Lead, timer.lead_id, populate_existing=True)
    if timer.purpose == TimerPurpose.CALLBACK:
        _remind_callback(session, timer, lead, services, now)
        return
    if lead.status != LeadStatus.NEW:
        timer.state, timer.leased_until, timer.updated_at = TimerState.DONE, None, now
        session.commit()
        return
    ladder = services.roster.ladder(now)
    rung = 0 if timer.step == 0 else min(timer.step, len(ladder) - 1)
    member = ladder[rung].member
    text = _text(session, timer, lead, member, services, now) if timer.step > 0 else None
    call = _call(session, timer, lead, member, services.templates.voice_reminder, services, now)
    contacts = [contact for contact in (text, call) if contact is not None]
    failures = [contact.error for contact in contacts if contact.error is not None]
    timer.leased_until, timer.updated_at = None, now
    timer.last_error = "; ".join(error.message for error in failures)[:1000] or None
    if len(failures) == len(contacts) and any(not error.permanent for error in failures):
        timer.due_at = now + RETRY_SAME_STEP
        log.warning("lead %s: escalation step %d failed, retrying in a minute: %s", lead.ref, timer.step,
                    timer.last_error)
        session.commit()
        return
    at_top = rung == len(ladder) - 1 and (timer.step > 0 or len(ladder) == 1)
    wait = services.settings.alert_top_repeat_minutes if at_top else services.settings.alert_reminder_minutes
    timer.due_at = now + timedelta(minutes=wait)
    if len(failures) == len(contacts) and not at_top:
        timer.due_at = now  # nobody can be reached on this rung: the next one at once
    timer.waiting_sms_sid = text.sid if text else None
    timer.waiting_call_sid = call.sid
    log.info("lead %s unclaimed: step %d reached staff %s (%s)", lead.ref, timer.step, member.id, ladder[rung].role)
    timer.step += 1
    session.commit()


def _text(
    session: Session, timer: EscalationTimer, lead: Lead, member: StaffMember, services: Services, now: datetime
) -> Contact:
    body = services.templates.render(services.templates.escalation_sms, alert_facts(lead, services, now))
    return _reach(session, timer, lead, member, "sms", body, services, now,
                  lambda attempt: services.messenger.send_sms(member.phone, body))


def _reach(
    session: Session, timer: EscalationTimer, lead: Lead, member: StaffMember, channel: str, body: str,
    services: Services, now: datetime, send: Callable[[StaffAlert], SentMessage],
) -> Contact:
    """Text or call `member` for this step, once. The attempt is committed before Twilio is asked (a reminder
    call's TwiML names it, and a crash after the send leaves it to be found); one whose answer is lost is looked up
    at Twilio at once, and again before the step is tried again, so a step never texts or rings twice."""
    step = f"{timer.purpose}-{timer.step}-{timer.callback_attempts}"
    earlier = session.scalars(select(StaffAlert).where(
        StaffAlert.lead_id == lead.id, StaffAlert.channel == channel, StaffAlert.escalation_step == step,
        StaffAlert.status.in_(UNANSWERED), StaffAlert.provider_id.is_(None)).order_by(StaffAlert.id.desc())).first()
    if earlier is not None:
        try:
            if (found := look_up_unanswered(session, earlier, services)) is not None:
                return Contact(found.sid)
        except IntegrationError as exc:
            return Contact(None, exc)  # not known whether it went out: this step waits rather than risk a second
    attempt = record_attempt(session, lead, timer.outbox_id, member, channel, body, now)
    attempt.escalation_step = step
    session.commit()
    try:
        sent = send(attempt)
    except IntegrationError as exc:
        attempt.error = exc.message
        if refused_before_writing(exc):
            attempt.status = "failed"
            return Contact(None, exc)
        with suppress(IntegrationError):
            if (found := look_up_unanswered(session, attempt, services)) is not None:
                return Contact(found.sid)
        attempt.status, attempt.error = UNANSWERED[channel == "voice"], exc.message  # still not known
        return Contact(None, exc)
    attempt.status, attempt.provider_id = sent.status, sent.sid
    return Contact(sent.sid)


def _remind_callback(
    session: Session, timer: EscalationTimer, lead: Lead, services: Services, now: datetime
) -> None:
    """Call the claimer to try the callback again; repeated a few times if they do not take it."""
    claim = session.scalar(select(Claim).where(Claim.lead_id == lead.id))
    timer.leased_until, timer.updated_at = None, now
    if claim is None or claim.bridge_status == "completed" or timer.step >= MAX_CALLBACK_REMINDERS:
        if claim is not None and timer.step >= MAX_CALLBACK_REMINDERS:
            log.warning("lead %s: %d call-back reminders to staff %s went unanswered; the callback stays in the "
                        "CRM task", lead.ref, timer.step, claim.staff_id)
        timer.state = TimerState.DONE
        session.commit()
        return
    member = services.roster.staff_with_phone(claim.staff_phone) or StaffMember.model_construct(
        id=claim.staff_id, name=claim.staff_name, phone=claim.staff_phone, crm_owner_id=claim.crm_owner_id
    )
    call = _call(session, timer, lead, member, services.templates.voice_callback, services, now)
    timer.last_error = call.error.message[:1000] if call.error else None
    timer.waiting_call_sid = call.sid
    timer.due_at = now + timedelta(minutes=services.settings.alert_reminder_minutes)
    timer.step += 1
    log.info("lead %s: call-back attempt %d, reminder %d to staff %s", lead.ref, timer.callback_attempts + 1,
             timer.step, claim.staff_id)
    session.commit()


def _call(
    session: Session, timer: EscalationTimer, lead: Lead, member: StaffMember, template: str, services: Services,
    now: datetime,
) -> Contact:
    prompt = services.templates.render(template, alert_facts(lead, services, now))

    def place(attempt: StaffAlert) -> SentMessage:
        url = hook_url(services.settings, REMINDER_PATH, alert=attempt.id)
        if url is None:
            raise IntegrationError("voice reminders need ADMITFLOW_PUBLIC_URL: set it to the https address Twilio "
                                   "reaches admitflow at", permanent=True)
        return services.messenger.place_call(member.phone, url)

    return _reach(session, timer, lead, member, "voice", prompt, services, now, place)


def record_message_status(session: Session, sid: str, status: str, error_code: str | None, now: datetime) -> None:
    """Twilio's report on a staff text. An undelivered text moves the lead on at once, unless a call of the
    same step is still ringing."""
    alert = _alert(session, sid, "sms", status, _MESSAGE_ORDER, error_code)
    if alert is None or status not in MESSAGE_FAILED:
        return
    timer = session.scalar(select(EscalationTimer).where(
        EscalationTimer.waiting_sms_sid == sid, EscalationTimer.state == TimerState.PENDING
    ))
    if timer is None:
        return
    timer.waiting_sms_sid = None
    if timer.waiting_call_sid is None:
        _due_now(timer, now, f"text to staff was {status}")


def record_call_status(session: Session, sid: str, status: str, now: datetime, answered_by: str | None = None) -> None:
    """Twilio's report on a reminder call. Busy, unanswered, failed, or answered by a voicemail (answering machine
    detection's `answered_by`): the next channel or person now."""
    if answered_by in MACHINE_ANSWERS:
        status = REACHED_MACHINE
    alert = _alert(session, sid, "voice", status, _CALL_ORDER, None)
    if alert is None or status not in CALL_FAILED:
        return
    timer = session.scalar(select(EscalationTimer).where(
        EscalationTimer.waiting_call_sid == sid, EscalationTimer.state == TimerState.PENDING
    ))
    # A call-back reminder is simply repeated later (escalate); a claim reminder moves up the ladder at once.
    if timer is not None and timer.purpose == TimerPurpose.CLAIM:
        timer.waiting_call_sid = None
        _due_now(timer, now, f"reminder call was {status}")


def _alert(
    session: Session, sid: str, channel: str, status: str, order: dict[str, int], error_code: str | None
) -> StaffAlert | None:
    alert = session.scalar(select(StaffAlert).where(StaffAlert.provider_id == sid, StaffAlert.channel == channel))
    if alert is None:
        log.info("Twilio reported on %s %s, which is not a staff alert of ours", channel, sid)
        return None
    # Callbacks can arrive out of order: never let "sent" overwrite "delivered".
    if order.get(status, 0) >= order.get(alert.status, 0):
        alert.status = status[:24]
    if error_code and error_code.isdigit():
        alert.error = f"Twilio error {error_code}: see https://www.twilio.com/docs/api/errors/{error_code}"
    return alert


def _due_now(timer: EscalationTimer, now: datetime, why: str) -> None:
    if timer.due_at > now:
        timer.due_at = now
    timer.updated_at = now
    log.info("escalation timer %s due now: %s", timer.id, why)
