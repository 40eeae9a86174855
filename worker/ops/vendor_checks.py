"""The real, read-only calls `admitflow doctor` makes to each configured service, each turned into a checklist line
with the fix. Nothing is created or changed at any vendor.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from config.settings import Settings
from config.sites import SiteConfig
from integrations.errors import IntegrationError, NotFound
from integrations.gravityforms.client import GravityFormsClient
from integrations.hubspot.account import OWNERS_SCOPE, REQUIRED_SCOPES, HubSpotAccount
from integrations.salesforce.account import SalesforceAccount
from integrations.twilio.account import NumberInfo, TwilioAccount
from integrations.twilio.webhooks import public_url
from worker.ops.readiness import Check
from worker.staff.roster import Roster
from worker.staff.services import chosen_backend, salesforce_tokens
from worker.staff.twilio_urls import CALL_STATUS_PATH, INBOUND_CALL_PATH, INBOUND_STATUS_PATH, SMS_PATH


def gravity_forms_checks(settings: Settings, sites: list[SiteConfig]) -> list[Check]:
    """GET /wp-json/gf/v2/forms/{id} for every form polled: the key pair works and the form exists."""
    checks = []
    for site in sites:
        name = f"gravity forms {site.name}"
        if not (site.base_url and site.consumer_key and site.consumer_secret):
            checks.append(Check(name, True, "no REST API key: webhooks only, no polling net under them", skipped=True))
            continue
        if not site.forms:
            checks.append(Check(name, True, f"{site.base_url}: no form ids to poll", skipped=True))
            continue
        client = GravityFormsClient(site.base_url, site.consumer_key, site.consumer_secret,
                                    timeout=settings.http_timeout_seconds)
        for form in site.forms:
            try:
                found = client.get_form(form.id)
            except NotFound:
                checks.append(Check(name, False, f"{site.base_url} has no form {form.id}",
                                    "fix the form ids (GRAVITYFORMS_FORM_IDS, or the site's forms in SITES_FILE)"))
                continue
            except IntegrationError as exc:
                checks.append(Check(name, False, f"form {form.id}: {exc.message}"))
                continue
            title = str(found.get("title") or "untitled")[:80]
            checks.append(Check(name, True, f"form {form.id} {title!r} ({len(found['fields'])} fields) at "
                                            f"{site.base_url}"))
    return checks


def crm_checks(settings: Settings, sites: list[SiteConfig], roster: Roster | None) -> list[Check]:
    backends = {chosen_backend(settings)} | {chosen_backend(settings, site.crm) for site in sites}
    checks = []
    if "hubspot" in backends:
        checks.append(_hubspot(settings, roster))
    if "salesforce" in backends:
        checks.append(_salesforce(settings))
    if backends == {"log"}:
        checks.append(Check("crm account", True, "log-only CRM: nothing to call", skipped=True))
    return checks


def _hubspot(settings: Settings, roster: Roster | None) -> Check:
    if settings.hubspot_token is None or not settings.hubspot_configured:
        return Check("hubspot", False, "HubSpot is the chosen CRM but HUBSPOT_TOKEN is not set",
                     "set HUBSPOT_TOKEN to the private app's access token")
    account = HubSpotAccount(settings.hubspot_token.get_secret_value(), base_url=settings.hubspot_base_url,
                             timeout=settings.http_timeout_seconds)
    try:
        info = account.token_info()
        missing = [scope for scope in REQUIRED_SCOPES if scope not in info.scopes]
        if missing:
            return Check("hubspot", False, f"the token lacks the scopes {', '.join(missing)}",
                         "add them to the private app (Scopes tab) and set HUBSPOT_TOKEN to its token")
        owners = account.owner_ids()
    except IntegrationError as exc:
        fix = f"give the private app the {OWNERS_SCOPE} scope" if exc.status == 403 else ""
        return Check("hubspot", False, exc.message, fix)
    unknown = sorted(member.id for member in (roster.staff if roster else []) if member.crm_owner_id
                     and member.crm_owner_id not in owners)
    if unknown:
        return Check("hubspot", False, f"roster staff {', '.join(unknown)} have a hubspot_owner_id HubSpot does not "
                                       "know", "fix their ids in ROSTER_FILE (GET /crm/v3/owners lists them)")
    return Check("hubspot", True, f"account {info.hub_id or '?'}: the token has {', '.join(REQUIRED_SCOPES)}; "
                                  f"{len(owners)} owners, every roster owner id among them")


def _salesforce(settings: Settings) -> Check:
    try:
        account = SalesforceAccount(salesforce_tokens(settings), api_version=settings.salesforce_api_version,
                                    external_id_field=settings.salesforce_external_id_field,
                                    timeout=settings.http_timeout_seconds)
        instance = account.instance_url()
        field = account.lead_field(account.external_id_field)
    except IntegrationError as exc:
        return Check("salesforce", False, exc.message)
    except ValueError as exc:  # a malformed setting the client refuses (URL, API version, field name)
        return Check("salesforce", False, str(exc))
    name = account.external_id_field
    fix = f"create {name} on Lead as Text(16), Unique, External ID, editable by the integration user"
    if field is None:
        return Check("salesforce", False, f"logged in to {instance}, but Lead has no field {name}", fix)
    if not (field.external_id and field.unique and field.createable and field.updateable):
        return Check("salesforce", False, f"Lead.{name} is not a unique external ID the integration user can write",
                     fix)
    return Check("salesforce", True, f"logged in to {instance}; Lead.{name} is a unique external ID")


@dataclass(frozen=True)
class NumberHook:
    """A setting of the center's number in the Twilio console that must call one of admitflow's routes."""

    name: str  # as doctor names it
    console: str  # the console's field, and what to choose there before the URL

    def setting(self, url: str) -> str:
        return f"set the number's {self.console} {url}, HTTP POST"


SMS_HOOK = NumberHook("incoming-message webhook", "'A message comes in' to Webhook,")
CALL_HOOK = NumberHook("incoming-call webhook", "'A call comes in' to Webhook,")
CALL_STATUS_HOOK = NumberHook("status callback", "'Call status changes' to")


def twilio_check(settings: Settings) -> Check:
    """The account is active, the 855 number is on it with SMS and voice, and its webhooks point at us."""
    if not (settings.twilio_account_sid and settings.twilio_auth_token and settings.twilio_from_number):
        return Check("twilio", True, "not configured: staff alerts are logged, not sent", skipped=True)
    account = TwilioAccount(settings.twilio_account_sid, settings.twilio_auth_token.get_secret_value(),
                            settings.twilio_from_number, api_base_url=settings.twilio_api_base_url,
                            timeout=settings.http_timeout_seconds)
    number = settings.twilio_from_number
    try:
        info = account.account()
        if info.status != "active":
            return Check("twilio", False, f"the Twilio account is {info.status}",
                         "reactivate it in the Twilio console, or set the SID and token of an active account")
        found = account.center_number()
    except IntegrationError as exc:
        return Check("twilio", False, exc.message)
    if found is None:
        return Check("twilio", False, f"TWILIO_FROM_NUMBER {number} is not a number on this Twilio account",
                     "set it to the center's 855 number as Twilio lists it (E.164), under the same account")
    lacking = [name for name, has in (("SMS", found.sms), ("voice", found.voice)) if not has]
    if lacking:
        return Check("twilio", False, f"{number} cannot do {' or '.join(lacking)}",
                     "use a number with SMS and voice (a toll-free number must be verified for SMS)")
    base = settings.public_url
    if base is None:
        return Check("twilio", False, "ADMITFLOW_PUBLIC_URL is not set, so staff replies cannot reach admitflow",
                     "set it to the https address Twilio reaches admitflow at")
    sms_url = public_url(base, SMS_PATH)
    problem = _hook_check(number, SMS_HOOK, found.sms_url, found.sms_method, sms_url) or _voice_check(
        settings, number, base, found)
    if problem is not None:
        return problem
    trial = " (a trial account: texts go only to verified numbers)" if info.type.lower() == "trial" else ""
    calls = (f"its calls to {public_url(base, INBOUND_CALL_PATH)}" if settings.voice_inbound != "off" else
             f"its calls go to {found.voice_routed_to or 'its own voice webhook'}")
    return Check("twilio", True, f"account active{trial}; {number} has SMS and voice; its messages come to "
                                 f"{sms_url}, {calls} (VOICE_INBOUND={settings.voice_inbound})")


def _hook_check(number: str, hook: NumberHook, url: str, method: str, wanted: str) -> Check | None:
    """None when the number calls POST `wanted`; otherwise the failure, with the console setting to change."""
    if url == wanted and method.upper() == "POST":
        return None
    shown = f"{method or '?'} {_without_password(url) or '(none)'}"
    return Check("twilio", False, f"{number}'s {hook.name} is {shown}, not POST {wanted}",
                 f"in the Twilio console, {hook.setting(wanted)}")


def _voice_check(settings: Settings, number: str, base: str, found: NumberInfo) -> Check | None:
    """With VOICE_INBOUND on, the number's calls and their status come to the phone line's routes; with it off,
    something other than admitflow answers them."""
    call_url = public_url(base, INBOUND_CALL_PATH)
    if settings.voice_inbound != "off":
        if found.voice_routed_to:
            return Check("twilio", False, f"calls to {number} go to {found.voice_routed_to}, not to its "
                                          "incoming-call webhook",
                         f"in the Twilio console, configure the number's voice with a webhook and "
                         f"{CALL_HOOK.setting(call_url)}")
        return (_hook_check(number, CALL_HOOK, found.voice_url, found.voice_method, call_url)
                or _hook_check(number, CALL_STATUS_HOOK, found.status_callback, found.status_callback_method,
                               public_url(base, INBOUND_STATUS_PATH)))
    turn_on = f"set VOICE_INBOUND=ring or voicemail and {CALL_HOOK.setting(call_url)}"
    if found.voice_url.startswith(base) and not found.voice_routed_to:
        return Check("twilio", False, f"{number}'s incoming-call webhook is {found.voice_url}, on admitflow, but "
                                      "VOICE_INBOUND is off: admitflow is not set to answer calls",
                     f"{turn_on}, or point 'A call comes in' at the center's own phone setup")
    if not (found.voice_url or found.voice_routed_to):
        return Check("twilio", False, f"{number} has no incoming-call webhook, so nothing answers a call to it",
                     f"for admitflow to answer, {turn_on}; otherwise point it at the center's own phone setup")
    if found.status_callback and not found.status_callback.startswith(base):
        return Check("twilio", False, f"{number}'s status callback is "
                                      f"{_without_password(found.status_callback)}, not on ADMITFLOW_PUBLIC_URL",
                     f"clear it, or set it to {public_url(base, CALL_STATUS_PATH)}")
    return None


def _without_password(url: str) -> str:
    """A webhook URL as doctor may print it: Twilio accepts basic-auth credentials in it, which are left out."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))
