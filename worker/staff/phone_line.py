"""A call to the center's number, step by step: ring the team, put through whoever presses 1, catch the miss.

Each function answers one of Twilio's requests for the call (worker/web/phone_line_hooks.py) from the call's row,
so a call in flight carries on across a restart of the web server, and a request Twilio repeats gets the same
answer. The ladder on shift is rung (at once, or one by one with VOICE_RING_ORDER=ladder), each staff member
hearing a whisper and pressing 1 to take the call, so a staff voicemail never takes it. A call nobody takes, one
the caller hangs up on while it rings, and one after hours go to voicemail and are stored as a submission through
the intake door (entry id: the CallSid), which processing turns into a lead like any other.

Nothing the caller said or their number is logged: calls are named by their row id.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from config.settings import Settings
from integrations.twilio import twiml
from worker.intake.entries import store_entry
from worker.intake.phone_entries import call_entry, caller_number, is_call_sid, line_site
from worker.staff.services import Services
from worker.staff.twilio_urls import (
    RECORDED_PATH,
    RECORDING_STATUS_PATH,
    RING_STATUS_PATH,
    TRANSCRIPTION_PATH,
    WHISPER_KEY_PATH,
    WHISPER_PATH,
    hook_url,
)
from worker.store.models import (
    CallOutcome,
    CallState,
    OutboxKind,
    OutboxMessage,
    OutboxState,
    PhoneCall,
    Submission,
    SubmissionSource,
)

log = logging.getLogger(__name__)

WHISPER_PROMPT = "Admissions call. Press 1 to take it."
PUT_THROUGH = "Connecting you to the caller now."
TAKEN_BY_ANOTHER = "Another staff member has taken this call. Goodbye."
DEFAULT_MISSED_PROMPT = (
    "Thank you for calling. Everyone on our admissions team is helping someone else right now. Please leave a "
    "message after the tone, and we will call you back as soon as we can. If you are in crisis, call or text "
    "9 8 8. In an emergency, call 9 1 1."
)
DEFAULT_AFTER_HOURS_PROMPT = (
    "Thank you for calling. Our admissions team cannot take your call right now. Please leave a message after the "
    "tone, and we will call you back as soon as we can. If you are in crisis, call or text 9 8 8. In an emergency, "
    "call 9 1 1."
)
ASK_FOR_NUMBER = "Your number was not shared with us, so please say a number we can call you back on."
THANKS = "Thank you. We will call you back as soon as we can. Goodbye."
NOTHING_LEFT = "We did not hear a message. We will call you back as soon as we can. Goodbye."
NO_VOICEMAIL = "Sorry we missed you. We will call you back as soon as we can. Goodbye."
NO_VOICEMAIL_WITHHELD = ("Sorry we missed you. Your number was not shared with us, so please call again, or send a "
                         "text to this number. Goodbye.")
# Twilio's final statuses for the inbound call (https://www.twilio.com/docs/voice/api/call-resource#call-status-values)
CALL_OVER = frozenset({"completed", "busy", "failed", "no-answer", "canceled"})
# How long a call may sit in one state before Twilio's silence means its end was never reported to us.
STALE_RINGING = timedelta(minutes=5)
STALE_VOICEMAIL = timedelta(minutes=5)  # after VOICE_VOICEMAIL_MAX_SECONDS
STALE_CONNECTED = timedelta(hours=4)


@dataclass(frozen=True)
class LineAnswer:
    """TwiML for Twilio, and what to hand on once the transaction commits: submissions to process (a missed call
    stored), and outbox rows now due (a voicemail note)."""

    twiml: str
    submission_ids: list[int] = field(default_factory=list)
    outbox_ids: list[int] = field(default_factory=list)


def _url(settings: Settings, path: str, **params: int | str) -> str:
    url = hook_url(settings, path, **params)
    if url is None:
        raise RuntimeError("the call flow needs ADMITFLOW_PUBLIC_URL: the address Twilio reaches admitflow at")
    return url


def _locked(session: Session, call_id: int) -> PhoneCall | None:
    return session.get(PhoneCall, call_id, with_for_update=True, populate_existing=True)


def _by_sid(session: Session, call_sid: str) -> PhoneCall | None:
    return session.scalars(
        select(PhoneCall).where(PhoneCall.call_sid == call_sid).with_for_update().execution_options(
            populate_existing=True)
    ).first()


def answer_call(session: Session, call_sid: str, caller: str | None, services: Services, now: datetime) -> LineAnswer:
    """Twilio's incoming-call request: ring the staff on shift, or (after hours, VOICE_INBOUND=voicemail) go
    straight to voicemail. A repeated request finds the call's row and gets the answer for where the call is."""
    settings = services.settings
    if not is_call_sid(call_sid):
        log.warning("a call request without a Twilio CallSid was hung up on")
        return LineAnswer(twiml.hang_up())
    call = _by_sid(session, call_sid)
    if call is None:
        if settings.voice_inbound == "off":
            log.error("a call reached the center's number with VOICE_INBOUND=off: it is taken to voicemail; set "
                      "VOICE_INBOUND, or point the number's voice webhook elsewhere")
        number = caller_number(caller, settings.phone_default_region)
        # A staff member calling the line is not rung themselves.
        staff = [rung.member.id for rung in services.roster.ladder(now) if rung.member.phone != number]
        on_shift = services.roster.shift_at(now) is not None
        ring = settings.voice_inbound == "ring" and on_shift and bool(staff)
        call = PhoneCall(
            call_sid=call_sid, site=line_site(settings), caller=number, started_at=now, updated_at=now,
            ring_order=settings.voice_ring_order, staff_ids=staff if ring else [], state=CallState.RINGING,
        )
        try:
            with session.begin_nested():
                session.add(call)
        except IntegrityError:  # the same request, arriving twice at once
            return answer_call(session, call_sid, caller, services, now)
        log.info("call %s to the center's number: %s", call.id,
                 f"ringing {len(call.staff_ids)} staff" if ring else "straight to voicemail")
        if not ring:
            after_hours = settings.voice_inbound == "ring" and not on_shift
            return _miss(session, call, CallOutcome.AFTER_HOURS if after_hours else CallOutcome.NOT_RUNG, services,
                         now)
    return LineAnswer(_current(call, services))


def _current(call: PhoneCall, services: Services) -> str:
    """The TwiML for where the call is now: what a repeated request is answered with."""
    if call.state == CallState.RINGING:
        return _ring(call, services)
    if call.state == CallState.VOICEMAIL:
        return _voicemail(call, services.settings)
    return twiml.hang_up()


def _ringing(call: PhoneCall) -> list[str]:
    """The staff ids rung now: all of them at once, or the current rung of the ladder."""
    staff: list[str] = list(call.staff_ids)
    return staff if call.ring_order == "simultaneous" else staff[call.ring_step:call.ring_step + 1]


def _ring(call: PhoneCall, services: Services) -> str:
    settings = services.settings
    members = [member for staff_id in _ringing(call) if (member := services.roster.member(staff_id)) is not None]
    legs = [(member.phone, _url(settings, WHISPER_PATH, call=call.id, staff=member.id)) for member in members]
    return twiml.ring_staff(legs, settings.twilio_from_number or "", settings.voice_ring_seconds,
                            _url(settings, RING_STATUS_PATH, call=call.id, step=call.ring_step))


def _voicemail(call: PhoneCall, settings: Settings) -> str:
    missed = call.outcome in (CallOutcome.MISSED, CallOutcome.ABANDONED)
    prompt = (settings.voice_missed_prompt or DEFAULT_MISSED_PROMPT) if missed else (
        settings.voice_after_hours_prompt or DEFAULT_AFTER_HOURS_PROMPT)
    if call.caller is None:
        prompt = f"{prompt} {ASK_FOR_NUMBER}"
    transcription = _url(settings, TRANSCRIPTION_PATH, call=call.id) if settings.voice_transcribe else None
    return twiml.voicemail(prompt, _url(settings, RECORDED_PATH, call=call.id),
                           _url(settings, RECORDING_STATUS_PATH, call=call.id), settings.voice_voicemail_max_seconds,
                           transcription, NOTHING_LEFT)


def whisper_twiml(session: Session, call_id: int, staff_id: str, settings: Settings) -> str:
    """What a staff member who picked up hears before the caller is put through; a leg for a call that is no
    longer ringing, or for someone not rung, is hung up."""
    call = session.get(PhoneCall, call_id)
    if call is None or call.state != CallState.RINGING or staff_id not in _ringing(call):
        return twiml.hang_up()
    return twiml.whisper(WHISPER_PROMPT, _url(settings, WHISPER_KEY_PATH, call=call_id, staff=staff_id))


def take_call(session: Session, call_id: int, staff_id: str, digits: str, now: datetime) -> str:
    """A key pressed during the whisper. The first staff member to press 1 takes the call (a conditional UPDATE:
    two at once, one wins) and is put through; anyone else is told and hung up."""
    call = session.get(PhoneCall, call_id)
    if digits != "1" or call is None or staff_id not in call.staff_ids:
        return twiml.hang_up()
    won = session.execute(
        update(PhoneCall)
        .where(PhoneCall.id == call_id, PhoneCall.state == CallState.RINGING, PhoneCall.answered_by.is_(None))
        .values(state=CallState.CONNECTED, outcome=CallOutcome.ANSWERED, answered_by=staff_id, answered_at=now,
                updated_at=now)
    ).rowcount == 1  # type: ignore[attr-defined]
    session.refresh(call)
    if won or (call.answered_by == staff_id and call.state == CallState.CONNECTED):
        if won:
            log.info("call %s taken by staff %s", call.id, staff_id)
        return twiml.put_through(PUT_THROUGH)
    return twiml.spoken(TAKEN_BY_ANOTHER)


def ring_ended(
    session: Session, call_id: int, step: int, dial_status: str, call_status: str, services: Services, now: datetime
) -> LineAnswer:
    """How a <Dial> ended. After a conversation: done. The caller gone: abandoned. Otherwise the next rung of the
    ladder, or voicemail. A repeated or overtaken request gets the answer for where the call is now."""
    call = _locked(session, call_id)
    if call is None:
        return LineAnswer(twiml.hang_up())
    caller_gone = call_status in CALL_OVER
    if call.state == CallState.CONNECTED:
        if dial_status in ("completed", "answered"):
            return LineAnswer(twiml.hang_up(), _end(session, call, now))
        # Taken, but never put through: nobody talked to the caller.
        log.warning("call %s: the bridge to staff %s ended %s", call.id, call.answered_by, dial_status[:24])
        if caller_gone:
            call.outcome = CallOutcome.ABANDONED
            return LineAnswer(twiml.hang_up(), _end(session, call, now))
        return _miss(session, call, CallOutcome.MISSED, services, now)
    if call.state != CallState.RINGING or step != call.ring_step:
        return LineAnswer(_current(call, services))
    if caller_gone:
        call.outcome = CallOutcome.ABANDONED
        return LineAnswer(twiml.hang_up(), _end(session, call, now))
    if call.ring_order == "ladder" and call.ring_step + 1 < len(call.staff_ids):
        call.ring_step, call.updated_at = call.ring_step + 1, now
        return LineAnswer(_ring(call, services))
    return _miss(session, call, CallOutcome.MISSED, services, now)


def _miss(session: Session, call: PhoneCall, outcome: CallOutcome, services: Services, now: datetime) -> LineAnswer:
    """Nobody takes the call: voicemail, or (VOICE_VOICEMAIL=false) a goodbye, and the lead now."""
    call.outcome, call.updated_at = outcome, now
    if services.settings.voice_voicemail:
        call.state, call.voicemail_at = CallState.VOICEMAIL, now
        return LineAnswer(_voicemail(call, services.settings))
    goodbye = NO_VOICEMAIL if call.caller is not None else NO_VOICEMAIL_WITHHELD
    return LineAnswer(twiml.spoken(goodbye), _end(session, call, now))


def _end(session: Session, call: PhoneCall, now: datetime) -> list[int]:
    """The call is over. Unless staff took it, it is stored (once, keyed by its CallSid) for processing to make
    a lead of; returns the submission to process when this stored it."""
    if call.state == CallState.ENDED:
        return []
    call.state, call.ended_at, call.updated_at = CallState.ENDED, now, now
    if call.outcome == CallOutcome.ANSWERED:
        log.info("call %s answered by staff %s, ended", call.id, call.answered_by)
        return []
    outcome = call.outcome or CallOutcome.ABANDONED
    call.outcome = outcome
    rung = len(call.staff_ids) if call.ring_order == "simultaneous" else min(call.ring_step + 1, len(call.staff_ids))
    rang = (call.voicemail_at or now) - call.started_at if call.staff_ids else timedelta(0)
    entry = call_entry(call.call_sid, call.started_at, call.caller, outcome, staff_rung=rung,
                       ring_seconds=max(0, round(rang.total_seconds())), voicemail=call.voicemail_at is not None)
    stored = store_entry(session, site=call.site, entry=entry, source=SubmissionSource.CALL)
    call.submission_id = stored.submission_id
    log.info("call %s ended %s: stored as submission %s", call.id, outcome, stored.submission_id)
    return [stored.submission_id] if stored.created else []


def voicemail_recorded(
    session: Session, call_id: int, recording: tuple[str, str, int] | None, now: datetime
) -> LineAnswer:
    """The voicemail's <Record> ended (also when the caller hung up while recording): keep where the recording is
    (sid, url, seconds), thank the caller, and store the call."""
    call = _locked(session, call_id)
    if call is None:
        return LineAnswer(twiml.hang_up())
    _keep(call, recording)
    return LineAnswer(twiml.spoken(THANKS), _end(session, call, now), queue_voicemail_note(session, call, now))


def _keep(call: PhoneCall, recording: tuple[str, str, int] | None) -> None:
    if recording is None or call.recording_sid is not None:
        return
    sid, url, seconds = recording
    if sid and url and seconds > 0:
        call.recording_sid, call.recording_url, call.recording_seconds = sid[:64], url, seconds


def recording_ready(
    session: Session, call_id: int, recording: tuple[str, str, int] | None, now: datetime
) -> list[int]:
    """Twilio's recording status callback: the voicemail is processed (and may be the first we hear of it)."""
    call = _locked(session, call_id)
    if call is None:
        return []
    _keep(call, recording)
    call.updated_at = now
    return queue_voicemail_note(session, call, now)


def transcription_ready(session: Session, call_id: int, text: str | None, status: str, now: datetime) -> list[int]:
    """Twilio's transcription of the voicemail (VOICE_TRANSCRIBE): kept encrypted for the CRM note, which is due."""
    call = _locked(session, call_id)
    if call is None or call.transcription_status is not None:
        return []
    call.transcription_status = status[:16] or "failed"
    call.transcription = (text or None) if status == "completed" else None
    return queue_voicemail_note(session, call, now)


def queue_voicemail_note(session: Session, call: PhoneCall, now: datetime) -> list[int]:
    """Make the lead's voicemail note due now, creating its outbox row if the lead exists; returns rows to hand on.

    Processing creates the row when the recording is known by then; this creates it for a recording that comes
    later. Both take the submission's row lock, so one of them sees the other's work."""
    if call.recording_sid is None or call.submission_id is None:
        return []
    submission = session.get(Submission, call.submission_id, with_for_update=True, populate_existing=True)
    if submission is None or submission.lead_id is None:
        return []
    row = session.scalar(select(OutboxMessage).where(
        OutboxMessage.kind == OutboxKind.CRM_VOICEMAIL, OutboxMessage.submission_id == submission.id))
    if row is None:
        row = OutboxMessage(kind=OutboxKind.CRM_VOICEMAIL, lead_id=submission.lead_id, submission_id=submission.id,
                            next_attempt_at=now, created_at=now)
        session.add(row)
        session.flush()
    elif row.state != OutboxState.PENDING:
        return []
    else:
        row.next_attempt_at = min(row.next_attempt_at, now)
    return [row.id]


def call_ended(session: Session, call_sid: str, status: str, caller: str | None, services: Services,
               now: datetime) -> list[int]:
    """The number's call status callback: the call is over. Whatever step it was at decides how it is counted;
    a call we never answered (the web server was down) is still a caller to call back."""
    if status not in CALL_OVER or not is_call_sid(call_sid):
        return []
    call = _by_sid(session, call_sid)
    if call is None:
        if services.settings.voice_inbound == "off":
            return []
        log.warning("a call to the center's number ended that admitflow never answered (was the web server down?): "
                    "it is stored as a missed call")
        call = PhoneCall(call_sid=call_sid, site=line_site(services.settings),
                         caller=caller_number(caller, services.settings.phone_default_region), started_at=now,
                         updated_at=now, state=CallState.VOICEMAIL, outcome=CallOutcome.MISSED, staff_ids=[])
        session.add(call)
        session.flush()
    elif call.state == CallState.RINGING:
        call.outcome = CallOutcome.ABANDONED
    return _end(session, call, now)


def close_stale_calls(session: Session, settings: Settings, now: datetime, limit: int = 100) -> list[int]:
    """Calls whose end Twilio never reported (a lost status callback, or none configured): ended by their age, so a
    caller is never left without a lead. Returns submissions to process; the caller commits."""
    voicemail_for = timedelta(seconds=settings.voice_voicemail_max_seconds) + STALE_VOICEMAIL
    cutoffs = {CallState.RINGING: now - timedelta(seconds=settings.voice_ring_seconds) - STALE_RINGING,
               CallState.VOICEMAIL: now - voicemail_for, CallState.CONNECTED: now - STALE_CONNECTED}
    stored: list[int] = []
    for state, cutoff in cutoffs.items():
        for call in session.scalars(
            select(PhoneCall).where(PhoneCall.state == state, PhoneCall.updated_at < cutoff)
            .order_by(PhoneCall.updated_at).limit(limit).with_for_update(skip_locked=True)
        ):
            if call.state == CallState.RINGING:
                call.outcome = CallOutcome.ABANDONED
            stored.extend(_end(session, call, now))
            log.warning("call %s was still %s with no word from Twilio: ended; check the center number's \"call "
                        "status changes\" webhook", call.id, state)
    return stored
