"""The real CRM and messenger when credentials are set, the log-only ones otherwise."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from zoneinfo import ZoneInfo

import redis

from config.settings import Settings, get_settings
from config.sites import load_sites
from integrations.crm import CRM, LogOnlyBatchCRM, batching
from integrations.hubspot.client import HubSpotCRM, hubspot_rate_limit
from integrations.messaging import LogOnlyMessenger, Messenger
from integrations.ratelimit import SharedRateLimit
from integrations.salesforce.auth import ClientCredentialsFlow, JwtBearerFlow, TokenProvider
from integrations.salesforce.client import SalesforceCRM
from integrations.twilio.client import TwilioMessenger
from integrations.twilio.rate import SendRate
from worker.staff.roster import Roster, load_roster
from worker.staff.templates import AlertTemplates
from worker.staff.twilio_urls import CALL_STATUS_PATH, MESSAGE_STATUS_PATH, hook_url


class CrmConfigurationError(ValueError):
    """The chosen CRM has no credentials; the message names the variables to set."""


def chosen_backend(settings: Settings, choice: str = "auto") -> str:
    choice = settings.crm_backend if choice == "auto" else choice
    if choice != "auto":
        return choice
    if settings.hubspot_configured:
        return "hubspot"
    return "salesforce" if settings.salesforce_configured else "log"


def crm_from_settings(settings: Settings, choice: str = "auto") -> CRM:
    backend = chosen_backend(settings, choice)
    if backend == "hubspot":
        if settings.hubspot_token is None or not settings.hubspot_configured:
            raise CrmConfigurationError("HubSpot is the chosen CRM but HUBSPOT_TOKEN is not set")
        return HubSpotCRM(
            settings.hubspot_token.get_secret_value(),
            base_url=settings.hubspot_base_url,
            timeout=settings.http_timeout_seconds,
            rate_limit=hubspot_rate_from_settings(settings),
            custom_properties=settings.hubspot_custom_properties,
            attribution_properties=settings.hubspot_attribution_properties,
            batch_size=settings.hubspot_batch_size,
            search_lag_seconds=settings.hubspot_search_lag_seconds,
        )
    if backend == "salesforce":
        try:
            return SalesforceCRM(
                salesforce_tokens(settings),
                api_version=settings.salesforce_api_version,
                external_id_field=settings.salesforce_external_id_field,
                task_external_id_field=settings.salesforce_task_external_id_field,
                center_timezone=ZoneInfo(settings.center_timezone),
                lead_fields=settings.salesforce_lead_field_map,
                timeout=settings.http_timeout_seconds,
            )
        except ValueError as exc:
            raise CrmConfigurationError(f"the Salesforce settings are invalid: {exc}") from None
    return LogOnlyBatchCRM()


def salesforce_tokens(settings: Settings) -> TokenProvider:
    if not settings.salesforce_configured or not settings.salesforce_client_id:
        raise CrmConfigurationError(
            "Salesforce is the chosen CRM but its credentials are not set: set SALESFORCE_CLIENT_ID and either "
            "SALESFORCE_CLIENT_SECRET, or SALESFORCE_USERNAME and SALESFORCE_PRIVATE_KEY_FILE"
        )
    if settings.salesforce_username and settings.salesforce_private_key_file:
        try:
            key = settings.salesforce_private_key_file.read_bytes()
        except OSError as exc:
            raise CrmConfigurationError(
                f"SALESFORCE_PRIVATE_KEY_FILE cannot be read ({type(exc).__name__}): check the path"
            ) from None
        return JwtBearerFlow(settings.salesforce_login_url, settings.salesforce_client_id,
                             settings.salesforce_username, key, timeout=settings.http_timeout_seconds)
    assert settings.salesforce_client_secret is not None
    return ClientCredentialsFlow(settings.salesforce_login_url, settings.salesforce_client_id,
                                 settings.salesforce_client_secret.get_secret_value(),
                                 timeout=settings.http_timeout_seconds)


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


def hubspot_rate_from_settings(settings: Settings) -> SharedRateLimit | None:
    """HubSpot's request budget and 429 pause, shared by all workers in the Redis broker; none without one."""
    if not settings.celery_broker_url.startswith(("redis://", "rediss://")):
        return None
    client = redis.Redis.from_url(settings.celery_broker_url, socket_timeout=settings.http_timeout_seconds)
    return hubspot_rate_limit(client, settings.hubspot_requests_per_10_seconds, settings.hubspot_searches_per_second)


@dataclass(frozen=True)
class Services:
    settings: Settings
    crm: CRM  # the default CRM (CRM_BACKEND)
    messenger: Messenger
    roster: Roster
    templates: AlertTemplates = field(default_factory=AlertTemplates)
    # Sites whose SITES_FILE entry chooses another CRM than the default.
    site_crms: dict[str, CRM] = field(default_factory=dict)

    def crm_for(self, site: str) -> CRM:
        return self.site_crms.get(site, self.crm)

    def batches(self) -> bool:
        """Whether any site's CRM takes many leads per call (then a CRM sync may wait to share a batch)."""
        return any(batching(crm) is not None for crm in (self.crm, *self.site_crms.values()))


def build_services(settings: Settings) -> Services:
    """Everything the worker talks to; the roster and the alert templates are validated here, at start-up."""
    roster = load_roster(settings.roster_file, ZoneInfo(settings.center_timezone))
    default = crm_from_settings(settings)
    by_backend: dict[str, CRM] = {chosen_backend(settings): default}
    site_crms: dict[str, CRM] = {}
    for site in load_sites(settings):
        backend = chosen_backend(settings, site.crm)
        if backend not in by_backend:
            by_backend[backend] = crm_from_settings(settings, backend)
        site_crms[site.name] = by_backend[backend]
    return Services(settings, default, messenger_from_settings(settings), roster,
                    AlertTemplates.from_settings(settings), site_crms)


@lru_cache(maxsize=1)
def default_services() -> Services:
    """One set per process, built from the environment on first use."""
    return build_services(get_settings())
