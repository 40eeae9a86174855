"""Trying again when a bridged call did not reach the person: the claimer is called back on a cadence.

After a <Dial> that ends busy, unanswered or failed, the lead's timer row turns into a call-back timer due at the
next wait of CALLBACK_CADENCE (e.g. +15 min, +2 h, next morning). When it is due, the claimer gets a call that
offers to connect them again with one key; the cadence used up, the follow-up stays with them in the CRM task.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from config.settings import Settings
from worker.store.models import Claim, EscalationTimer, OutboxKind, OutboxMessage, TimerPurpose, TimerState

log = logging.getLogger(__name__)


def cadence(settings: Settings) -> list[str]:
    """The waits between call-back attempts, e.g. ["15m", "2h", "morning"]; validated by the settings."""
    return [step for step in settings.callback_cadence.split(",") if step]


def after_wait(step: str, now: datetime, timezone: ZoneInfo, morning_hour: int) -> datetime:
    """`now` plus one cadence step; "morning" is the next morning_hour:00 on the center's wall clock."""
    if step == "morning":
        local = now.astimezone(timezone)
        morning = local.replace(hour=morning_hour, minute=0, second=0, microsecond=0)
        if morning <= local:
            morning = (morning.replace(tzinfo=None) + timedelta(days=1)).replace(tzinfo=timezone)
        return morning
    amount, unit = int(step[:-1]), step[-1]
    return now + (timedelta(hours=amount) if unit == "h" else timedelta(minutes=amount))


def schedule_callback(session: Session, claim: Claim, settings: Settings, timezone: ZoneInfo,
                      now: datetime) -> datetime | None:
    """Count a bridged call that did not reach the person and set when the claimer is called to try again;
    None when the cadence is used up."""
    timer = session.scalar(select(EscalationTimer).where(EscalationTimer.lead_id == claim.lead_id))
    if timer is None:
        alert = session.scalar(select(OutboxMessage.id).where(
            OutboxMessage.lead_id == claim.lead_id, OutboxMessage.kind == OutboxKind.STAFF_ALERT
        ).limit(1))
        if alert is None:
            return None
        timer = EscalationTimer(lead_id=claim.lead_id, outbox_id=alert, due_at=now, created_at=now)
        session.add(timer)
    failed_before = timer.callback_attempts if timer.purpose == TimerPurpose.CALLBACK else 0
    waits = cadence(settings)
    timer.purpose, timer.callback_attempts, timer.step = TimerPurpose.CALLBACK, failed_before + 1, 0
    timer.leased_until, timer.waiting_sms_sid, timer.waiting_call_sid, timer.updated_at = None, None, None, now
    if failed_before >= len(waits):
        timer.state = TimerState.DONE
        log.info("claim %s: %d bridged call(s) did not reach the person; no more call-back attempts", claim.id,
                 timer.callback_attempts)
        return None
    timer.state = TimerState.PENDING
    timer.due_at = after_wait(waits[failed_before], now, timezone, settings.callback_morning_hour)
    return timer.due_at


def end_callbacks(session: Session, lead_id: int, now: datetime) -> None:
    """The bridged call reached the person: no more call-back attempts."""
    timer = session.scalar(select(EscalationTimer).where(EscalationTimer.lead_id == lead_id))
    if timer is not None and timer.purpose == TimerPurpose.CALLBACK:
        timer.state, timer.updated_at = TimerState.DONE, now
