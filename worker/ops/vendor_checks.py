"""The real, read-only calls `admitflow doctor` makes to each configured service, each turned into a checklist line
with the fix. Nothing is created or changed at any vendor.
"""

from __future__ import annotations

from config.settings import Settings
from config.sites import SiteConfig
from integrations.errors import IntegrationError, NotFound
from integrations.gravityforms.client import GravityFormsClient
from integrations.hubspot.account import OWNERS_SCOPE, REQUIRED_SCOPES, HubSpotAccount
from integrations.salesforce.account import SalesforceAccount
from integrations.twilio.account import TwilioAccount
from worker.ops.readiness import Check
from worker.staff.roster import Roster
from worker.staff.services import chosen_backend, salesforce_tokens
from worker.staff.twilio_urls import CALL_STATUS_PATH, SMS_PATH, hook_url


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
    sms_url, status_url = hook_url(settings, SMS_PATH), hook_url(settings, CALL_STATUS_PATH)
    if sms_url is None:
        return Check("twilio", False, "ADMITFLOW_PUBLIC_URL is not set, so staff replies cannot reach admitflow",
                     "set it to the https address Twilio reaches admitflow at")
    if found.sms_url != sms_url or found.sms_method.upper() != "POST":
        shown = f"{found.sms_method or '?'} {found.sms_url or '(none)'}"
        return Check("twilio", False, f"{number}'s incoming-message webhook is {shown}, not POST {sms_url}",
                     f"in the Twilio console, set the number's 'A message comes in' to Webhook, {sms_url}, HTTP POST")
    if found.status_callback and not found.status_callback.startswith(settings.public_url or ""):
        return Check("twilio", False, f"{number}'s status callback is {found.status_callback}, not on "
                                      f"ADMITFLOW_PUBLIC_URL", f"clear it, or set it to {status_url}")
    trial = " (a trial account: texts go only to verified numbers)" if info.type.lower() == "trial" else ""
    return Check("twilio", True, f"account active{trial}; {number} has SMS and voice; its messages come to "
                                 f"{sms_url}")
