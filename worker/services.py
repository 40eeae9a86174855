"""The real CRM and messenger when credentials are set, the log-only ones otherwise."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from config.settings import Settings, get_settings
from integrations.crm import CRM, LogOnlyCRM
from integrations.hubspot.client import HubSpotCRM
from integrations.messaging import LogOnlyMessenger, Messenger
from integrations.twilio.client import TwilioMessenger
from worker.roster import Roster, load_roster


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
        )
    return LogOnlyMessenger()


@dataclass(frozen=True)
class Services:
    settings: Settings
    crm: CRM
    messenger: Messenger
    roster: Roster


def build_services(settings: Settings) -> Services:
    return Services(settings, crm_from_settings(settings), messenger_from_settings(settings),
                    load_roster(settings.roster_file))


@lru_cache(maxsize=1)
def default_services() -> Services:
    """One set per process, built from the environment on first use."""
    return build_services(get_settings())
