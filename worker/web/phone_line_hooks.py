"""The center's number as a door: the voice webhooks of an inbound call, each step answered from the call's row.

The number's "A call comes in" webhook is INBOUND_CALL_PATH and its "Call status changes" callback
INBOUND_STATUS_PATH; every other URL is one admitflow puts in its own TwiML. Each request is signature-checked
first (worker/web/twilio_hooks.py), the step is one short transaction (worker/staff/phone_line.py), and a missed
call's submission is handed to processing after the commit.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from fastapi import APIRouter, BackgroundTasks, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from sqlalchemy.orm import Session

from integrations.twilio import twiml
from worker.staff.phone_line import (
    LineAnswer,
    answer_call,
    call_ended,
    recording_ready,
    ring_ended,
    take_call,
    transcription_ready,
    voicemail_recorded,
    whisper_twiml,
)
from worker.staff.services import Services
from worker.staff.twilio_urls import (
    INBOUND_CALL_PATH,
    INBOUND_STATUS_PATH,
    RECORDED_PATH,
    RECORDING_STATUS_PATH,
    RING_STATUS_PATH,
    TRANSCRIPTION_PATH,
    WHISPER_KEY_PATH,
    WHISPER_PATH,
)
from worker.store.db import session_scope, utcnow
from worker.web.twilio_hooks import TwilioDoor, query_id, xml

_STAFF_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_-")


LineStep = Callable[[Session, datetime], LineAnswer]


def _line_step(step: LineStep) -> LineAnswer:
    with session_scope() as session:
        return step(session, utcnow())


def _recording(params: dict[str, str]) -> tuple[str, str, int] | None:
    """(RecordingSid, RecordingUrl, RecordingDuration) of Twilio's <Record> action or recording status callback."""
    sid, url = params.get("RecordingSid", ""), params.get("RecordingUrl", "")
    seconds = params.get("RecordingDuration", "")
    if not (sid and url.startswith("https://") and seconds.isascii() and seconds.isdigit() and len(seconds) <= 6):
        return None
    return sid, url, int(seconds)


def _staff_id(request: Request) -> str | None:
    value = request.query_params.get("staff", "")
    return value if value and len(value) <= 32 and set(value) <= _STAFF_ID_CHARS else None


# A step of a call admitflow answered: (session, now, Twilio's parameters, the call's row id) -> the answer.
CallStep = Callable[[Session, datetime, dict[str, str], int], LineAnswer]


def phone_line_router(services: Services, door: TwilioDoor) -> APIRouter:
    """The inbound call's routes. Like every Twilio route, each answers 403 to an unsigned request."""
    router = APIRouter()
    settings = services.settings

    async def answer(step: LineStep, background: BackgroundTasks) -> Response:
        done: LineAnswer = await run_in_threadpool(_line_step, step)
        await door.hand_on(done.outbox_ids, background, done.submission_ids)
        return xml(done.twiml, background)

    async def call_step(request: Request, background: BackgroundTasks, step: CallStep | None) -> Response:
        """A step whose TwiML URL names the call's row (`?call=`); None: the URL names nothing to act on."""
        params = await door.verified(request)
        if params is None:
            return door.forbidden()
        call_id = query_id(request, "call")
        if call_id is None or step is None:
            return xml(twiml.hang_up())
        return await answer(lambda session, now: step(session, now, params, call_id), background)

    @router.post(INBOUND_CALL_PATH)
    async def inbound_call(request: Request, background: BackgroundTasks) -> Response:
        """A call to the center's number (the number's "A call comes in" webhook)."""
        params = await door.verified(request)
        if params is None:
            return door.forbidden()
        sid, caller = params.get("CallSid", ""), params.get("From")
        return await answer(lambda session, now: answer_call(session, sid, caller, services, now), background)

    @router.post(WHISPER_PATH)
    async def whisper(request: Request, background: BackgroundTasks) -> Response:
        """What a staff member who picked up hears before the caller is put through (<Number url>)."""
        staff_id = _staff_id(request)
        return await call_step(request, background, None if staff_id is None else (
            lambda session, now, params, call_id: LineAnswer(whisper_twiml(session, call_id, staff_id, settings))))

    @router.post(WHISPER_KEY_PATH)
    async def whisper_key(request: Request, background: BackgroundTasks) -> Response:
        """The key a staff member pressed during the whisper: 1 takes the call."""
        staff_id = _staff_id(request)
        return await call_step(request, background, None if staff_id is None else (
            lambda session, now, params, call_id: LineAnswer(
                take_call(session, call_id, staff_id, params.get("Digits", ""), now))))

    @router.post(RING_STATUS_PATH)
    async def ring_status(request: Request, background: BackgroundTasks) -> Response:
        """How ringing the staff ended (<Dial action>): done, the next rung, or voicemail."""
        step = query_id(request, "step")
        return await call_step(request, background, None if step is None else (
            lambda session, now, params, call_id: ring_ended(
                session, call_id, step, params.get("DialCallStatus", ""), params.get("CallStatus", ""), services,
                now)))

    @router.post(RECORDED_PATH)
    async def recorded(request: Request, background: BackgroundTasks) -> Response:
        """The voicemail's <Record> ended (the caller pressed #, fell silent, or hung up)."""
        return await call_step(request, background, lambda session, now, params, call_id: voicemail_recorded(
            session, call_id, _recording(params), now))

    @router.post(RECORDING_STATUS_PATH)
    async def recording_status(request: Request, background: BackgroundTasks) -> Response:
        """Twilio's recording status callback: the voicemail is ready at Twilio."""
        return await call_step(request, background, lambda session, now, params, call_id: LineAnswer(
            twiml.message_reply(None), outbox_ids=recording_ready(
                session, call_id, _recording(params) if params.get("RecordingStatus") == "completed" else None,
                now)))

    @router.post(TRANSCRIPTION_PATH)
    async def transcription(request: Request, background: BackgroundTasks) -> Response:
        """Twilio's transcription of the voicemail (VOICE_TRANSCRIBE)."""
        return await call_step(request, background, lambda session, now, params, call_id: LineAnswer(
            twiml.message_reply(None), outbox_ids=transcription_ready(
                session, call_id, params.get("TranscriptionText"), params.get("TranscriptionStatus", ""), now)))

    @router.post(INBOUND_STATUS_PATH)
    async def inbound_status(request: Request, background: BackgroundTasks) -> Response:
        """The number's call status callback: the call is over, however it went."""
        params = await door.verified(request)
        if params is None:
            return door.forbidden()
        sid, status, caller = params.get("CallSid", ""), params.get("CallStatus", ""), params.get("From")
        return await answer(lambda session, now: LineAnswer(
            twiml.message_reply(None), call_ended(session, sid, status, caller, services, now)), background)

    return router
