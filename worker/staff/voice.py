"""The reminder call: what staff hear when they answer, a key press that claims, and the bridge to the person.

Twilio fetches each step from admitflow's webhooks (worker/web/twilio_hooks.py); these functions decide the answer.
The person's number appears only inside <Dial>, which Twilio needs to connect the call; staff never hear or see it.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from integrations.twilio import twiml
from worker.staff.alerts import alert_facts
from worker.staff.callbacks import end_callbacks, schedule_callback
from worker.staff.claims import ClaimOutcome, claim_lead
from worker.staff.escalation import MACHINE_ANSWERS, record_call_status
from worker.staff.services import Services
from worker.staff.templates import spoken_ref
from worker.staff.twilio_urls import DIAL_STATUS_PATH, KEYPRESS_PATH, REMINDER_PATH, hook_url
from worker.store.models import Claim, Lead, LeadStatus, OutboxKind, OutboxMessage, OutboxState, StaffAlert, Submission

log = logging.getLogger(__name__)

NO_LONGER_VALID = "This reminder is no longer valid. Goodbye."


def _holder(session: Session, lead_id: int) -> str:
    holder = session.scalar(select(Claim.staff_name).where(Claim.lead_id == lead_id))
    return holder or "another staff member"


def reminder_twiml(
    session: Session, alert_id: int, services: Services, now: datetime, answered_by: str | None = None
) -> str:
    """What a staff member hears on answering a reminder call: the PHI-free prompt inside a one-key <Gather>.
    A voicemail that answered (`answered_by`, answering machine detection) hears nothing, and the lead moves on."""
    alert = session.get(StaffAlert, alert_id)
    keypress_url = hook_url(services.settings, KEYPRESS_PATH, alert=alert_id)
    if alert is None or alert.channel != "voice" or keypress_url is None:
        return twiml.spoken(NO_LONGER_VALID)
    if answered_by in MACHINE_ANSWERS:
        log.info("reminder call %s reached a voicemail, not staff", alert.id)
        # Its id is committed right after Twilio accepted the call; if not yet, the status callback (which also
        # carries AnsweredBy) moves the lead on when the call ends.
        if alert.provider_id is not None:
            record_call_status(session, alert.provider_id, "in-progress", now, answered_by)
        return twiml.hang_up()
    lead = session.get_one(Lead, alert.lead_id)
    templates = services.templates
    facts = alert_facts(lead, services, now)
    if lead.status == LeadStatus.NEW:
        return twiml.claim_prompt(templates.render(templates.voice_reminder, facts), keypress_url)
    claim = session.scalar(select(Claim).where(Claim.lead_id == lead.id))
    if claim is not None and claim.staff_phone == alert.staff_phone:
        if claim.bridge_status == "completed":
            return twiml.spoken(f"Reference {spoken_ref(lead.ref)} is yours, and your call with the person was "
                                "completed. Nothing more is needed. Goodbye.")
        # Theirs, and nobody has reached the person yet: a call-back attempt; one key connects them.
        return twiml.claim_prompt(templates.render(templates.voice_callback, facts), keypress_url,
                                  twiml.NO_KEY_CALLBACK)
    return twiml.spoken(f"Reference {spoken_ref(lead.ref)} has already been claimed by "
                        f"{_holder(session, lead.id)}. Thank you. Goodbye.")


def keypress_twiml(
    session: Session, alert_id: int, digits: str, services: Services, now: datetime
) -> tuple[str, list[int]]:
    """Pressing 1 claims the lead for the staff member called and bridges them to the person, from the center's
    number. Returns the TwiML and outbox rows to dispatch after the caller commits."""
    alert = session.get(StaffAlert, alert_id)
    reminder_url = hook_url(services.settings, REMINDER_PATH, alert=alert_id)
    if alert is None or alert.channel != "voice" or reminder_url is None:
        return twiml.spoken(NO_LONGER_VALID), []
    if digits != "1":
        return twiml.redirect("Press 1 to claim the request.", reminder_url), []
    staff = services.roster.staff_with_phone(alert.staff_phone)
    if staff is None:
        return twiml.spoken("This phone is no longer on the admissions roster, so it cannot claim requests. "
                            "Goodbye."), []
    result = claim_lead(session, alert.lead_id, staff, "voice", now)
    spoken = spoken_ref(result.lead_ref)
    if result.outcome == ClaimOutcome.TAKEN:
        return twiml.spoken(f"Reference {spoken} was already claimed by {result.holder_name}. Goodbye."), []
    lead = session.get_one(Lead, alert.lead_id)
    dial_status_url = hook_url(services.settings, DIAL_STATUS_PATH, claim=result.claim_id)
    caller_id = services.settings.twilio_from_number
    if lead.phone is None or caller_id is None or dial_status_url is None:
        return twiml.spoken(f"Reference {spoken} is yours. This request has no phone number to connect; open "
                            "its CRM task to reach them. Goodbye."), result.outbox_ids
    log.info("bridging staff %s to lead %s", staff.id, lead.ref)
    intro = f"Reference {spoken} is yours. Connecting you now; they will see the center's number."
    return twiml.bridge(intro, lead.phone, caller_id, dial_status_url), result.outbox_ids


def dial_status_twiml(
    session: Session, claim_id: int, status: str, duration: str | None, dial_sid: str | None, services: Services,
    now: datetime,
) -> str:
    """Record how the bridged call ended on the claim (the speed-to-lead record), schedule the next call-back
    attempt if it did not reach the person, and tell the staff member."""
    claim = session.get(Claim, claim_id)
    if claim is None:
        return twiml.spoken(NO_LONGER_VALID)
    seconds = int(duration) if duration and duration.isdigit() else None
    claim.bridge_status, claim.bridge_call_sid = status[:24], dial_sid
    if status == "completed":
        claim.bridge_seconds = seconds
        if claim.bridged_at is None:
            claim.bridged_at = now - timedelta(seconds=seconds or 0)
        end_callbacks(session, claim.lead_id, now)
        queue_call_log(session, claim.lead_id)
        return twiml.spoken("The call has ended. It is logged in the CRM and the callback task is closed. Goodbye.")
    zone = services.roster.timezone
    retry_at = schedule_callback(session, claim, services.settings, zone, now)
    log.info("bridged call for claim %s ended %s; next attempt %s", claim_id, status,
             retry_at.isoformat() if retry_at else "none")
    if retry_at is None:
        return twiml.spoken("The caller did not answer, and that was the last scheduled attempt. The callback stays "
                            "with you in the CRM task. Goodbye.")
    local = retry_at.astimezone(zone)
    if local.date() == now.astimezone(zone).date():
        when = local.strftime("at %-I:%M %p")
    else:
        when = local.strftime("on %A at %-I:%M %p")
    return twiml.spoken(f"The caller did not answer. You will get a call to try again {when}. Goodbye.")


def queue_call_log(session: Session, lead_id: int) -> int | None:
    """An outbox row that logs the connected call in the CRM (once per lead); its id, to hand on at once."""
    existing = session.scalar(select(OutboxMessage.id).where(
        OutboxMessage.lead_id == lead_id, OutboxMessage.kind == OutboxKind.CRM_CALL_LOG))
    if existing is not None:
        return None
    latest = session.scalar(select(func.max(Submission.id)).where(Submission.lead_id == lead_id))
    if latest is None:
        return None
    row = OutboxMessage(kind=OutboxKind.CRM_CALL_LOG, lead_id=lead_id, submission_id=latest)
    session.add(row)
    session.flush()
    return row.id


def pending_call_log(session: Session, claim_id: int) -> list[int]:
    claim = session.get(Claim, claim_id)
    if claim is None:
        return []
    return list(session.scalars(select(OutboxMessage.id).where(
        OutboxMessage.lead_id == claim.lead_id, OutboxMessage.kind == OutboxKind.CRM_CALL_LOG,
        OutboxMessage.state == OutboxState.PENDING)))
