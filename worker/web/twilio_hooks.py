"""Twilio's webhooks: staff SMS replies, message and call status callbacks, and the reminder call's TwiML.

Every request is checked first: X-Twilio-Signature must match the URL Twilio called (rebuilt from
ADMITFLOW_PUBLIC_URL) and the form parameters, or the answer is 403 and nothing is read. Then the database work
is done in one short transaction, outbox rows are handed on after it commits, and TwiML goes back at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from fastapi import APIRouter, BackgroundTasks, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import PlainTextResponse, Response
from sqlalchemy.orm import Session

from config.settings import Settings
from integrations.twilio import twiml
from integrations.twilio.webhooks import SIGNATURE_HEADER, SIGNATURE_SETTINGS_HEADER, TwilioSignatures, public_url
from worker.delivery.dispatch import Dispatcher, InlineDispatcher
from worker.ops.rejections import Rejections
from worker.staff.escalation import record_call_status, record_message_status
from worker.staff.inbound_texts import TextAnswer, answer_text
from worker.staff.services import Services
from worker.staff.twilio_urls import (
    CALL_STATUS_PATH,
    DIAL_STATUS_PATH,
    KEYPRESS_PATH,
    MESSAGE_STATUS_PATH,
    REMINDER_PATH,
    SMS_PATH,
)
from worker.staff.voice import NO_LONGER_VALID, dial_status_twiml, keypress_twiml, pending_call_log, reminder_twiml
from worker.store.db import session_scope, utcnow

log = logging.getLogger(__name__)

# Twilio's webhook bodies are a few hundred bytes; anything much larger is not Twilio.
MAX_TWILIO_BODY = 64 * 1024


def xml(document: str, background: BackgroundTasks | None = None) -> Response:
    return Response(document, media_type="application/xml", background=background)


def in_transaction(work: Callable[[Session, datetime], str]) -> str:
    with session_scope() as session:
        return work(session, utcnow())


def query_id(request: Request, name: str) -> int | None:
    """A row id from the query string; None for anything else (nine digits at most: a PostgreSQL integer)."""
    value = request.query_params.get(name, "")
    return int(value) if value.isascii() and value.isdigit() and len(value) <= 9 else None


class TwilioDoor:
    """What every Twilio route does first and last: check the signature, and hand committed work on."""

    def __init__(self, settings: Settings, dispatcher: Dispatcher, refused: Rejections) -> None:
        self.settings, self.dispatcher, self.refused = settings, dispatcher, refused
        token = settings.twilio_auth_token.get_secret_value() if settings.twilio_auth_token else ""
        self.signatures = TwilioSignatures(token) if token else None

    @property
    def open(self) -> bool:
        return self.signatures is not None and self.settings.public_url is not None

    async def verified(self, request: Request) -> dict[str, str] | None:
        """The form parameters of a genuine Twilio request, or None."""
        if self.signatures is None or self.settings.public_url is None:
            self.refused.refused("twilio", 403, "not_configured",
                                 f"{request.url.path}: TWILIO_AUTH_TOKEN or ADMITFLOW_PUBLIC_URL is not set")
            return None
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_TWILIO_BODY:
            self.refused.refused("twilio", 403, "too_large", f"{request.url.path}: body over {MAX_TWILIO_BODY} bytes")
            return None
        form = await request.form()
        params = {key: value for key, value in form.items() if isinstance(value, str)}
        url = public_url(self.settings.public_url, request.url.path, request.url.query)
        if self.signatures.is_valid(url, params, request.headers.get(SIGNATURE_HEADER),
                                    request.headers.get(SIGNATURE_SETTINGS_HEADER)):
            return params
        self.refused.refused("twilio", 403, "bad_signature",
                             f"{request.url.path}: missing or invalid X-Twilio-Signature for "
                             f"{self.settings.public_url} (is ADMITFLOW_PUBLIC_URL the address Twilio calls?)")
        return None

    @staticmethod
    def forbidden() -> Response:
        return PlainTextResponse("missing or invalid X-Twilio-Signature", status_code=403)

    async def hand_on(self, outbox_ids: list[int], background: BackgroundTasks,
                      submission_ids: list[int] | None = None) -> None:
        """Dispatch committed work: submissions to process, outbox rows to deliver."""
        if not outbox_ids and not submission_ids:
            return
        if isinstance(self.dispatcher, InlineDispatcher):
            if submission_ids:
                background.add_task(self.dispatcher.submissions_stored, submission_ids)
            if outbox_ids:
                background.add_task(self.dispatcher.outbox_ready, outbox_ids)
            return
        if submission_ids:
            await run_in_threadpool(self.dispatcher.submissions_stored, submission_ids)
        if outbox_ids:
            await run_in_threadpool(self.dispatcher.outbox_ready, outbox_ids)


def twilio_router(settings: Settings, services: Services, door: TwilioDoor) -> APIRouter:
    """The routes Twilio calls about staff alerts. Without TWILIO_AUTH_TOKEN and ADMITFLOW_PUBLIC_URL every one
    answers 403."""
    router = APIRouter()
    if not door.open:
        log.error("Twilio webhooks are refused with 403 until TWILIO_AUTH_TOKEN and ADMITFLOW_PUBLIC_URL are set")
    verified, forbidden, hand_on = door.verified, door.forbidden, door.hand_on

    @router.post(SMS_PATH)
    async def inbound_sms(request: Request, background: BackgroundTasks) -> Response:
        """A text to the center's number (Twilio's incoming-message webhook): a staff reply claims a lead, anyone
        else's text is stored to become a lead."""
        params = await verified(request)
        if params is None:
            return forbidden()
        media = params.get("NumMedia", "0")
        answer: list[TextAnswer] = []

        def work(session: Session, now: datetime) -> str:
            answer.append(answer_text(session, params.get("MessageSid", ""), params.get("From", ""),
                                      params.get("Body", ""), int(media) if media.isdigit() else 0, services, now))
            return twiml.message_reply(answer[0].reply)

        document = await run_in_threadpool(in_transaction, work)
        await hand_on(answer[0].outbox_ids, background, answer[0].submission_ids)
        return xml(document, background)

    @router.post(MESSAGE_STATUS_PATH)
    async def message_status(request: Request) -> Response:
        """Twilio's report on a staff text (queued, sent, delivered, undelivered, failed)."""
        params = await verified(request)
        if params is None:
            return forbidden()
        sid, status = params.get("MessageSid", ""), params.get("MessageStatus", "")

        def work(session: Session, now: datetime) -> str:
            record_message_status(session, sid, status, params.get("ErrorCode"), now)
            return twiml.message_reply(None)

        return xml(await run_in_threadpool(in_transaction, work))

    @router.post(CALL_STATUS_PATH)
    async def call_status(request: Request) -> Response:
        """Twilio's final report on a reminder call (completed, busy, no-answer, failed, canceled), with answering
        machine detection's verdict (AnsweredBy)."""
        params = await verified(request)
        if params is None:
            return forbidden()
        sid, status = params.get("CallSid", ""), params.get("CallStatus", "")

        def work(session: Session, now: datetime) -> str:
            record_call_status(session, sid, status, now, params.get("AnsweredBy"))
            return twiml.message_reply(None)

        return xml(await run_in_threadpool(in_transaction, work))

    @router.post(REMINDER_PATH)
    async def reminder(request: Request) -> Response:
        """The TwiML a reminder call plays when staff answer: the prompt and "press 1"."""
        params = await verified(request)
        if params is None:
            return forbidden()
        alert_id = query_id(request, "alert")
        if alert_id is None:
            return xml(twiml.spoken(NO_LONGER_VALID))
        answered_by = params.get("AnsweredBy")
        return xml(await run_in_threadpool(
            in_transaction, lambda session, now: reminder_twiml(session, alert_id, services, now, answered_by)
        ))

    @router.post(KEYPRESS_PATH)
    async def keypress(request: Request, background: BackgroundTasks) -> Response:
        """The key staff pressed (<Gather> action): 1 claims and bridges them to the person."""
        params = await verified(request)
        if params is None:
            return forbidden()
        alert_id = query_id(request, "alert")
        if alert_id is None:
            return xml(twiml.spoken(NO_LONGER_VALID))
        digits = params.get("Digits", "")
        outbox_ids: list[int] = []

        def work(session: Session, now: datetime) -> str:
            document, queued = keypress_twiml(session, alert_id, digits, services, now)
            outbox_ids.extend(queued)
            return document

        document = await run_in_threadpool(in_transaction, work)
        await hand_on(outbox_ids, background)
        return xml(document, background)

    @router.post(DIAL_STATUS_PATH)
    async def dial_status(request: Request, background: BackgroundTasks) -> Response:
        """How the bridge to the person ended (<Dial> action): recorded on the claim."""
        params = await verified(request)
        if params is None:
            return forbidden()
        claim_id = query_id(request, "claim")
        if claim_id is None:
            return xml(twiml.spoken(NO_LONGER_VALID))
        status, duration = params.get("DialCallStatus", ""), params.get("DialCallDuration")
        sid = params.get("DialCallSid")
        call_logs: list[int] = []

        def record(session: Session, now: datetime) -> str:
            document = dial_status_twiml(session, claim_id, status, duration, sid, services, now)
            session.flush()
            call_logs.extend(pending_call_log(session, claim_id))
            return document

        document = await run_in_threadpool(in_transaction, record)
        await hand_on(call_logs, background)
        return xml(document, background)

    return router
