"""The real CRM and messenger when credentials are set, the log-only ones otherwise."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from zoneinfo import ZoneInfo

import redis

from config.settings import Settings, get_settings
from integrations.crm import CRM, LogOnlyCRM
from integrations.hubspot.client import HubSpotCRM
from integrations.messaging import LogOnlyMessenger, Messenger
from integrations.twilio.client import TwilioMessenger
from integrations.twilio.rate import SendRate
from worker.roster import Roster, load_roster
from worker.templates import AlertTemplates
from worker.twilio_urls import CALL_STATUS_PATH, MESSAGE_STATUS_PATH, hook_url


def crm_from_settings(settings: Settings) -> CRM:
    if settings.hubspot_token is not None and settings.hubspot_configured:
        return HubSpotCRM(
            settings.hubspot_token.get_secret_value(),
            base_url=settings.hubspot_base_url,
            timeout=settings.http_timeout_seconds,
        )
    return LogOnlyCRM()


def messenger_from_settings(settings: Settings) -> Messenger:
    if (
        settings.twilio_configured
        and settings.twilio_account_sid
        and settings.twilio_auth_token
        and settings.twilio_from_number
    ):
        return TwilioMessenger(
            settings.twilio_account_sid,
            settings.twilio_auth_token.get_secret_value(),
            settings.twilio_from_number,
            api_base_url=settings.twilio_api_base_url,
            timeout=settings.http_timeout_seconds,
            status_callback_url=hook_url(settings, MESSAGE_STATUS_PATH),
            call_status_callback_url=hook_url(settings, CALL_STATUS_PATH),
            sms_rate=sms_rate_from_settings(settings),
        )
    return LogOnlyMessenger()


def sms_rate_from_settings(settings: Settings) -> SendRate | None:
    """The shared per-second limit on texts from the center's number, kept in the Redis broker; none without one."""
    if not (settings.twilio_sms_per_second and settings.twilio_from_number
            and settings.celery_broker_url.startswith(("redis://", "rediss://"))):
        return None
    client = redis.Redis.from_url(settings.celery_broker_url, socket_timeout=settings.http_timeout_seconds)
    return SendRate(client, settings.twilio_from_number, settings.twilio_sms_per_second)


@dataclass(frozen=True)
class Services:
    settings: Settings
    crm: CRM
    messenger: Messenger
    roster: Roster
    templates: AlertTemplates = field(default_factory=AlertTemplates)


def build_services(settings: Settings) -> Services:
    """Everything the worker talks to; the roster and the alert templates are validated here, at start-up."""
    roster = load_roster(settings.roster_file, ZoneInfo(settings.center_timezone))
    return Services(settings, crm_from_settings(settings), messenger_from_settings(settings), roster,
                    AlertTemplates.from_settings(settings))


@lru_cache(maxsize=1)
def default_services() -> Services:
    """One set per process, built from the environment on first use."""
    return build_services(get_settings())
